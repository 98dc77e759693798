// Does compute-sanitizer's racecheck accept a one-way named-barrier hand-over?
// The main kernel passes row maxima between its two warpgroups this way (DESIGN.md,
// "Checking"): the writer stores, then `bar.arrive`s; the reader `bar.sync`s, then loads.
// PTX orders the writer's earlier accesses before the reader's later ones when the barrier
// completes. This kernel does only that, in the main kernel's order, with no other traffic,
// and checks every value it reads, so a racecheck report here is about the tool.
//
//   nvcc -arch=sm_90a -lineinfo -o /tmp/probe tests/sanitizer/barrier_handoff_probe.cu
//   compute-sanitizer --tool racecheck /tmp/probe 2
#include <cstdio>
#include <cstdlib>

enum { kScaleA = 1, kScaleB, kPA, kPB };
constexpr int kRounds = 8;

__device__ __forceinline__ void bar_sync(int id) { asm volatile("bar.sync %0, 256;" ::"r"(id) : "memory"); }
__device__ __forceinline__ void bar_arrive(int id) { asm volatile("bar.arrive %0, 256;" ::"r"(id) : "memory"); }

__global__ void handoff(int* errors, int slots) {
  __shared__ float max_a[2][64], max_b[2][64];
  const int row = threadIdx.x % 64, wg = threadIdx.x / 128;
  for (int k = 0; k < kRounds; ++k) {
    const int slot = k % slots;
    if (wg == 0) {
      if (threadIdx.x < 64) max_a[slot][row] = k;
      bar_arrive(kScaleA);
      bar_sync(kScaleB);
      if (max_b[slot][row] != k + 0.5f) atomicAdd(errors, 1);
      bar_arrive(kPA);
      bar_sync(kPB);
    } else {
      bar_sync(kScaleA);
      const float a = max_a[slot][row];
      if (threadIdx.x < 192) max_b[slot][row] = a + 0.5f;
      bar_arrive(kScaleB);
      bar_arrive(kPB);
      bar_sync(kPA);
    }
  }
}

// argv[1]: 1 = one slot reused every round, 2 = slots alternate by round (the kernel's form).
int main(int argc, char** argv) {
  const int slots = argc > 1 ? atoi(argv[1]) : 2;
  int* errors;
  cudaMallocManaged(&errors, sizeof(int));
  *errors = 0;
  handoff<<<1, 256>>>(errors, slots);
  const cudaError_t e = cudaDeviceSynchronize();
  printf("%d slot(s): %s, %d wrong values\n", slots, cudaGetErrorString(e), *errors);
  return e != cudaSuccess || *errors != 0;
}
