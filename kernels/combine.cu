// Merges the partial results of split requests: one warp per (query row, 128 columns).
// out = sum_i 2^(lse_i - lse) * out_i, with lse = log2(sum_i 2^lse_i).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <c10/cuda/CUDAException.h>

#include "config.h"
#include "kernels.h"
#include "params.h"

namespace mla {

// One warp per (query row, 128-column slice): one float4 per lane per split. Rows and
// slices spread one split request over many SMs, and the split loop is unrolled so
// that several partials are in flight per lane.
constexpr int kCombineRowsPerBlock = 4;
constexpr int kCombineColumnSlices = kHeadDimV / 128;

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

template <typename Element>
__global__ void __launch_bounds__(32 * kCombineRowsPerBlock)
    combine_kernel(const __grid_constant__ DecodeParams p) {
  const int req = blockIdx.x;
  const int q_row = blockIdx.y * kCombineRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int col = blockIdx.z * 128 + lane * 4;
  const int first_split = p.num_splits[req];
  const int n = p.num_splits[req + 1] - first_split;
  if (n <= 1 || q_row >= p.q_rows) return;  // unsplit requests were written directly

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
      // Lane i holds the weight of split base + i; the warp walks them with shuffles.
      const float lane_weight = base + lane < n ? exp2f(lse_parts[int64_t(base + lane) * p.q_rows] - lse) : 0.f;
      const int count = min(32, n - base);
#pragma unroll 8
      for (int j = 0; j < count; ++j) {
        const float w = __shfl_sync(0xffffffff, lane_weight, j);
        const float4 x = *reinterpret_cast<const float4*>(parts + (base + j) * split_stride);
        acc.x += w * x.x;
        acc.y += w * x.y;
        acc.z += w * x.z;
        acc.w += w * x.w;
      }
    }
  }
  Element* out = static_cast<Element*>(p.out) + (int64_t(req) * p.q_rows + q_row) * kHeadDimV + col;
  store4(out, acc);
  if (blockIdx.z == 0 && lane == 0) {
    const int s = q_row / p.num_heads_q, h = q_row % p.num_heads_q;
    p.lse[(int64_t(req) * p.num_heads_q + h) * p.seqlen_q + s] = lse * float(M_LN2);
  }
}

template <typename Element>
void run_combine(const DecodeParams& p, cudaStream_t stream) {
  dim3 grid(p.batch, (p.q_rows + kCombineRowsPerBlock - 1) / kCombineRowsPerBlock, kCombineColumnSlices);
  combine_kernel<Element><<<grid, 32 * kCombineRowsPerBlock, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void run_combine<__nv_bfloat16>(const DecodeParams&, cudaStream_t);
template void run_combine<__half>(const DecodeParams&, cudaStream_t);

}  // namespace mla
