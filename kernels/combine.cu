// Merges the partial results of split requests: up to four warps per (query row, 128 columns).
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
  const float* parts = p.out_accum + (int64_t(first_split) * p.q_rows + q_row) * kHeadDimV + col;
  const int64_t split_stride = int64_t(p.q_rows) * kHeadDimV;
  // Splits go 32·kLsePerLane at a time, each lane holding kLsePerLane of their LSEs in
  // registers: one round of loads gives the pass's max, its sum and every weight, and the
  // partials of a pass are loaded independently of each other. acc and sum are kept at the
  // running max, every warp of the row computing the same max and sum. Many warps per row
  // come with few rows and many splits, so they hold more LSEs a lane; one warp per row keeps
  // the registers of a large grid low.
  constexpr int kLsePerLane = kWarpsPerRow;
  constexpr int kSplitsPerPass = 32 * kLsePerLane;
  float max_lse = -INFINITY, sum = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int base = 0; base < n; base += kSplitsPerPass) {
    float weight[kLsePerLane];
    float pass_max = -INFINITY;
#pragma unroll
    for (int k = 0; k < kLsePerLane; ++k) {
      const int split = base + k * 32 + lane;
      weight[k] = split < n ? lse_parts[int64_t(split) * p.q_rows] : -INFINITY;
      pass_max = fmaxf(pass_max, weight[k]);
    }
    for (int o = 16; o > 0; o /= 2) pass_max = fmaxf(pass_max, __shfl_xor_sync(0xffffffff, pass_max, o));
    if (pass_max == -INFINITY) continue;  // no split of this pass saw a key
    const float new_max = fmaxf(max_lse, pass_max);
    const float carry = exp2f(max_lse - new_max);  // 0 while max_lse is -inf
    max_lse = new_max;
    acc.x *= carry;
    acc.y *= carry;
    acc.z *= carry;
    acc.w *= carry;
    float lane_sum = 0.f;
#pragma unroll
    for (int k = 0; k < kLsePerLane; ++k) {
      weight[k] = exp2f(weight[k] - max_lse);
      lane_sum += weight[k];
    }
    for (int o = 16; o > 0; o /= 2) lane_sum += __shfl_xor_sync(0xffffffff, lane_sum, o);
    sum = sum * carry + lane_sum;
#pragma unroll
    for (int k = 0; k < kLsePerLane; ++k) {
      // This warp's splits among these 32: every kWarpsPerRow-th, its weight held by lane j.
      const int first = base + k * 32, count = min(32, n - first);
#pragma unroll 8
      for (int j = subset; j < count; j += kWarpsPerRow) {
        const float w = __shfl_sync(0xffffffff, weight[k], j);
        const float4 x = *reinterpret_cast<const float4*>(parts + (first + j) * split_stride);
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
  const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
  const float lse = sum > 0.f ? max_lse + __log2f(sum) : -INFINITY;
  Element* out = static_cast<Element*>(p.out) + (int64_t(req) * p.q_rows + q_row) * kHeadDimV + col;
  store4(out, make_float4(acc.x * inv_sum, acc.y * inv_sum, acc.z * inv_sum, acc.w * inv_sum));
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
