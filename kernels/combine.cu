// Merges the partial results of split requests: four warps per (query row, 128 columns).
// out = sum_i 2^(lse_i - lse) * out_i, with lse = log2(sum_i 2^lse_i).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <c10/cuda/CUDAException.h>

#include "config.h"
#include "kernels.h"
#include "params.h"

namespace mla {

// kWarpsPerRow warps per (query row, 128-column slice), each over every kWarpsPerRow-th
// split, one float4 per lane per split: rows, slices and split subsets spread one split
// request over many SMs, and the split loop is unrolled so that several partials are in
// flight per lane. kWarpsPerRow is the most that keeps the grid within one wave of warps:
// CTAs of unsplit requests only exit, and a second wave of them costs microseconds.
constexpr int kCombineRowsPerBlock = 4;
constexpr int kCombineMaxWarpsPerRow = 4;
constexpr int kCombineColumnSlices = kHeadDimV / 128;
constexpr int kMaxWarpsPerSM = 64;

template <typename T>
__device__ __forceinline__ void store4(T* dst, float4 v);
template <>
__device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16* dst, float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  *reinterpret_cast<uint2*>(dst) = make_uint2(*reinterpret_cast<uint32_t*>(&lo), *reinterpret_cast<uint32_t*>(&hi));
}
template <>
__device__ __forceinline__ void store4<__half>(__half* dst, float4 v) {
  __half2 lo = __floats2half2_rn(v.x, v.y), hi = __floats2half2_rn(v.z, v.w);
  *reinterpret_cast<uint2*>(dst) = make_uint2(*reinterpret_cast<uint32_t*>(&lo), *reinterpret_cast<uint32_t*>(&hi));
}

template <typename Element, int kWarpsPerRow>
__global__ void __launch_bounds__(32 * kWarpsPerRow * kCombineRowsPerBlock)
    combine_kernel(const __grid_constant__ DecodeParams p) {
  __shared__ float4 warp_acc[kCombineRowsPerBlock][kWarpsPerRow][32];
  const int req = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_in_block = warp / kWarpsPerRow, subset = warp % kWarpsPerRow;
  const int q_row = min(blockIdx.y * kCombineRowsPerBlock + row_in_block, p.q_rows - 1);
  const int col = blockIdx.z * 128 + lane * 4;
  // Launched early (programmatic dependent launch): wait until the main kernel's
  // partials are written.
  cudaGridDependencySynchronize();
  const int first_split = p.num_splits[req];
  const int n = p.num_splits[req + 1] - first_split;
  if (n <= 1) return;  // unsplit requests were written directly

  const float* lse_parts = p.lse_accum + int64_t(first_split) * p.q_rows + q_row;
  float max_lse = -INFINITY;
  for (int i = lane; i < n; i += 32) max_lse = fmaxf(max_lse, lse_parts[int64_t(i) * p.q_rows]);
  for (int o = 16; o > 0; o /= 2) max_lse = fmaxf(max_lse, __shfl_xor_sync(0xffffffff, max_lse, o));
  const float shift = max_lse == -INFINITY ? 0.f : max_lse;
  float sum = 0.f;
  for (int i = lane; i < n; i += 32) sum += exp2f(lse_parts[int64_t(i) * p.q_rows] - shift);
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffff, sum, o);
  const float lse = sum > 0.f ? shift + __log2f(sum) : -INFINITY;

  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (sum > 0.f) {
    const float* parts = p.out_accum + (int64_t(first_split) * p.q_rows + q_row) * kHeadDimV + col;
    const int64_t split_stride = int64_t(p.q_rows) * kHeadDimV;
    for (int base = 0; base < n; base += 32) {
      // Lane i holds the weight of split base + i; the warp walks its subset with shuffles.
      const float lane_weight = base + lane < n ? exp2f(lse_parts[int64_t(base + lane) * p.q_rows] - lse) : 0.f;
      const int count = min(32, n - base);
#pragma unroll 8
      for (int j = subset; j < count; j += kWarpsPerRow) {
        const float w = __shfl_sync(0xffffffff, lane_weight, j);
        const float4 x = *reinterpret_cast<const float4*>(parts + (base + j) * split_stride);
        acc.x += w * x.x;
        acc.y += w * x.y;
        acc.z += w * x.z;
        acc.w += w * x.w;
      }
    }
  }
  if constexpr (kWarpsPerRow > 1) {
    warp_acc[row_in_block][subset][lane] = acc;
    __syncthreads();
    if (subset != 0) return;
#pragma unroll
    for (int w = 1; w < kWarpsPerRow; ++w) {
      const float4 x = warp_acc[row_in_block][w][lane];
      acc.x += x.x;
      acc.y += x.y;
      acc.z += x.z;
      acc.w += x.w;
    }
  }
  if (blockIdx.y * kCombineRowsPerBlock + row_in_block >= p.q_rows) return;  // a clamped duplicate row
  Element* out = static_cast<Element*>(p.out) + (int64_t(req) * p.q_rows + q_row) * kHeadDimV + col;
  store4(out, acc);
  if (blockIdx.z == 0 && lane == 0) {
    const int s = q_row / p.num_heads_q, h = q_row % p.num_heads_q;
    p.lse[(int64_t(req) * p.num_heads_q + h) * p.seqlen_q + s] = lse * float(M_LN2);
  }
}

template <typename Element, int kWarpsPerRow>
void launch_combine(const DecodeParams& p, dim3 grid, cudaStream_t stream) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(32 * kWarpsPerRow * kCombineRowsPerBlock);
  config.stream = stream;
  cudaLaunchAttribute pdl{};
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &pdl;
  config.numAttrs = 1;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, combine_kernel<Element, kWarpsPerRow>, p));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Element>
void run_combine(const DecodeParams& p, int num_sms, cudaStream_t stream) {
  const dim3 grid(p.batch, (p.q_rows + kCombineRowsPerBlock - 1) / kCombineRowsPerBlock, kCombineColumnSlices);
  const int64_t warps_per_row_wave = int64_t(num_sms) * kMaxWarpsPerSM / (int64_t(grid.x) * grid.y * grid.z * kCombineRowsPerBlock);
  if (warps_per_row_wave >= kCombineMaxWarpsPerRow) {
    launch_combine<Element, kCombineMaxWarpsPerRow>(p, grid, stream);
  } else if (warps_per_row_wave >= 2) {
    launch_combine<Element, 2>(p, grid, stream);
  } else {
    launch_combine<Element, 1>(p, grid, stream);
  }
}

template void run_combine<__nv_bfloat16>(const DecodeParams&, int, cudaStream_t);
template void run_combine<__half>(const DecodeParams&, int, cudaStream_t);

}  // namespace mla
