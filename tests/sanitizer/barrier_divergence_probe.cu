// Does compute-sanitizer's synccheck accept a named barrier that the two warpgroups reach from
// different code? The main kernel's warpgroups run different instantiations of `consume`, so
// each `bar.sync id, 256` they share sits at two addresses (DESIGN.md, "Checking"). Mode 0 does
// only that and checks every value the barrier orders; mode 1 reaches the same barrier from one
// call site. A synccheck report in mode 0 alone is about the tool.
//
//   nvcc -arch=sm_90a -lineinfo -o /tmp/probe tests/sanitizer/barrier_divergence_probe.cu
//   compute-sanitizer --tool synccheck /tmp/probe 0
#include <cstdio>
#include <cstdlib>

__device__ __forceinline__ void bar_sync(int id) { asm volatile("bar.sync %0, 256;" ::"r"(id) : "memory"); }

__device__ void check_neighbour(const int* seen, int* errors) {
  if (seen[threadIdx.x ^ 128] != int(threadIdx.x ^ 128)) atomicAdd(errors, 1);
}

template <int kWarpgroup>
__device__ __noinline__ void role(int* seen, int* errors) {
  seen[threadIdx.x] = threadIdx.x;
  bar_sync(1);
  check_neighbour(seen, errors);
}

__global__ void probe(int* errors, int mode) {
  __shared__ int seen[256];
  if (mode == 0) {
    if (threadIdx.x < 128) role<0>(seen, errors); else role<1>(seen, errors);
  } else {
    seen[threadIdx.x] = threadIdx.x;
    bar_sync(1);
    check_neighbour(seen, errors);
  }
}

int main(int argc, char** argv) {
  const int mode = argc > 1 ? atoi(argv[1]) : 0;
  int* errors;
  cudaMallocManaged(&errors, sizeof(int));
  *errors = 0;
  probe<<<1, 256>>>(errors, mode);
  const cudaError_t status = cudaDeviceSynchronize();
  printf("mode %d: %s, %d wrong values\n", mode, cudaGetErrorString(status), *errors);
  return status == cudaSuccess && *errors == 0 ? 0 : 1;
}
