// Merges the partial results of split requests.
// out = sum_i 2^(lse_i - lse) * out_i, with lse = log2(sum_i 2^lse_i).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <c10/cuda/CUDAException.h>

#include "config.h"
#include "kernels.h"
#include "params.h"
#include "timeline.h"

namespace mla {

// A warp merges one query row over kSlicesPerWarp 128-column slices (four columns per lane
// each) and every kWarpsPerRow-th split. Few requests with many splits (a skewed batch)
// want several warps per row and one slice each, so that a long request spreads over many
// SMs; many requests with two or three splits each want one warp per whole row, so that
// the grid stays within one wave and each warp has a whole row's loads in flight at once.
// run_combine picks the most parallel shape whose warps fit in one wave.
constexpr int kCombineRowsPerBlock = 4;
constexpr int kColumnSlices = kHeadDimV / 128;
// Warps of one wave on an SM at 64 registers a thread; every shape takes 48-64 (ptxas, thirteenth
// session).
constexpr int kMaxWarpsPerSM = 32;
// Partials a lane keeps in flight per batch of pieces: 8 loads of four 16-bit columns each,
// kept as loaded (two registers a load) until their multiply, beside the batch's LSEs.
constexpr int kLoadsInFlight = 8;

// Two-wide conversions of each 16-bit type, so that the four-column store and load below are
// written once.
template <typename T>
struct Pair;
template <>
struct Pair<__nv_bfloat16> {
  using Type = __nv_bfloat162;
  static __device__ __forceinline__ Type narrow(float a, float b) { return __floats2bfloat162_rn(a, b); }
  static __device__ __forceinline__ float2 widen(Type v) { return __bfloat1622float2(v); }
};
template <>
struct Pair<__half> {
  using Type = __half2;
  static __device__ __forceinline__ Type narrow(float a, float b) { return __floats2half2_rn(a, b); }
  static __device__ __forceinline__ float2 widen(Type v) { return __half22float2(v); }
};

template <typename T>
__device__ __forceinline__ void store4(T* dst, float4 v) {
  const typename Pair<T>::Type lo = Pair<T>::narrow(v.x, v.y), hi = Pair<T>::narrow(v.z, v.w);
  *reinterpret_cast<uint2*>(dst) =
      make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
}

template <typename T>
__device__ __forceinline__ float4 widen4(uint2 v) {
  const float2 lo = Pair<T>::widen(*reinterpret_cast<const typename Pair<T>::Type*>(&v.x));
  const float2 hi = Pair<T>::widen(*reinterpret_cast<const typename Pair<T>::Type*>(&v.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

__device__ __forceinline__ void scale4(float4& acc, float w) {
  acc.x *= w;
  acc.y *= w;
  acc.z *= w;
  acc.w *= w;
}

__device__ __forceinline__ void fma4(float4& acc, float w, const float4& x) {
  acc.x += w * x.x;
  acc.y += w * x.y;
  acc.z += w * x.z;
  acc.w += w * x.w;
}

// The request blockIdx.x stands for: with by_part, the split request whose last piece
// begins part blockIdx.x (each split request has exactly one), so that a large batch gets
// a grid of parts rather than of requests; -1 for none.
__device__ __forceinline__ int combined_request(const DecodeParams& p, bool by_part) {
  if (!by_part) return blockIdx.x;
  const PartMetadata& m = p.metadata[blockIdx.x];
  if (m.begin_req >= p.batch) return -1;
  const int pieces = p.num_splits[m.begin_req + 1] - p.num_splits[m.begin_req];
  return pieces > 1 && m.begin_split == pieces - 1 ? m.begin_req : -1;
}

template <typename Element, int kWarpsPerRow, int kSlicesPerWarp>
__global__ void __launch_bounds__(32 * kWarpsPerRow * kCombineRowsPerBlock)
    combine_kernel(const __grid_constant__ DecodeParams p, bool by_part) {
  constexpr int kBatch = kLoadsInFlight / kSlicesPerWarp;  // pieces loaded at once
  __shared__ float4 warp_acc[kCombineRowsPerBlock][kWarpsPerRow][kSlicesPerWarp][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_in_block = warp / kWarpsPerRow, subset = warp % kWarpsPerRow;
  const int q_row = min(blockIdx.y * kCombineRowsPerBlock + row_in_block, p.q_rows - 1);
  const int col = blockIdx.z * kSlicesPerWarp * 128 + lane * 4;
  combine_stamp(p, 0);
  // Which request this block merges comes from the metadata, written before the main kernel
  // began, so it is read before the wait: a block with nothing to merge leaves at once instead
  // of holding a slot until the main kernel ends.
  const int req = combined_request(p, by_part);
  if (req < 0) return;
  const int first_split = p.num_splits[req];
  const int n = p.num_splits[req + 1] - first_split;
  if (n <= 1) return;  // unsplit requests were written directly
  // Launched early (programmatic dependent launch): wait until the main kernel's
  // partials are written.
  cudaGridDependencySynchronize();
  combine_stamp(p, 1);
  combine_block_stamp(p, CombineStamp::kWaited);
  combine_block_stamp(p, CombineStamp::kInfo, n);

  const float* lse_parts = p.lse_accum + int64_t(q_row) * p.splits_capacity + first_split;
  // Four 16-bit columns of this lane's first slice, in piece `first_split`.
  const uint2* parts = reinterpret_cast<const uint2*>(static_cast<const Element*>(p.out_accum) +
                                                      (int64_t(first_split) * p.q_rows + q_row) * kHeadDimV + col);
  const int64_t piece_stride = int64_t(p.q_rows) * kHeadDimV / 4;  // in uint2
  // Online merge: this warp's pieces j = subset + i·kWarpsPerRow go kBatch at a time, each
  // piece's LSE (one address for the whole warp) loaded with its partials, so that a batch waits
  // for one round trip, not one for the LSEs and another for the partials. acc and sum are kept
  // at the warp's running max of the LSEs. A load costs one address and no branch (a slot past n
  // re-reads the last piece with an LSE of -inf, i.e. weight 0): with ~20 instructions of address
  // and branch a load, a long request's batches took 1.2 µs instead of 0.95 (DESIGN, "Thirteenth
  // session").
  float run_max = -INFINITY, sum = 0.f;
  float4 acc[kSlicesPerWarp];
#pragma unroll
  for (int s = 0; s < kSlicesPerWarp; ++s) acc[s] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int j0 = subset; j0 < n; j0 += kBatch * kWarpsPerRow) {
    float lse[kBatch];
    uint2 x[kBatch][kSlicesPerWarp];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int j = min(j0 + i * kWarpsPerRow, n - 1);
      const uint2* src = parts + j * piece_stride;
      lse[i] = lse_parts[j];
#pragma unroll
      for (int s = 0; s < kSlicesPerWarp; ++s) x[i][s] = src[s * 32];
    }
#pragma unroll
    for (int i = 0; i < kBatch; ++i) lse[i] = j0 + i * kWarpsPerRow < n ? lse[i] : -INFINITY;
    float batch_max = -INFINITY;
#pragma unroll
    for (int i = 0; i < kBatch; ++i) batch_max = fmaxf(batch_max, lse[i]);
    if (j0 == subset) combine_block_stamp(p, CombineStamp::kFirstBatch);
    // No branch on a batch without keys: the compiler would sink the partials' loads behind it.
    const float new_max = fmaxf(run_max, batch_max);
    const float ref = new_max == -INFINITY ? 0.f : new_max;  // no -inf - -inf while no piece saw a key
    const float carry = exp2f(run_max - ref);                 // 0 while run_max is -inf
    run_max = new_max;
    sum *= carry;
#pragma unroll
    for (int s = 0; s < kSlicesPerWarp; ++s) scale4(acc[s], carry);
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const float w = exp2f(lse[i] - ref);  // 0 for a piece past n or without keys
      sum += w;
#pragma unroll
      for (int s = 0; s < kSlicesPerWarp; ++s) fma4(acc[s], w, widen4<Element>(x[i][s]));
    }
  }
  combine_block_stamp(p, CombineStamp::kMerged);
  if constexpr (kWarpsPerRow > 1) {
    // The row's warps met different maxima: move each to the row's before adding.
    __shared__ float warp_max[kCombineRowsPerBlock][kWarpsPerRow], warp_sum[kCombineRowsPerBlock][kWarpsPerRow];
#pragma unroll
    for (int s = 0; s < kSlicesPerWarp; ++s) warp_acc[row_in_block][subset][s][lane] = acc[s];
    if (lane == 0) {
      warp_max[row_in_block][subset] = run_max;
      warp_sum[row_in_block][subset] = sum;
    }
    __syncthreads();
    if (subset != 0) return;
    float row_max = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarpsPerRow; ++w) row_max = fmaxf(row_max, warp_max[row_in_block][w]);
    sum = 0.f;
#pragma unroll
    for (int s = 0; s < kSlicesPerWarp; ++s) acc[s] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < kWarpsPerRow; ++w) {
      const float m = warp_max[row_in_block][w];
      const float f = m == -INFINITY ? 0.f : exp2f(m - row_max);
      sum += f * warp_sum[row_in_block][w];
#pragma unroll
      for (int s = 0; s < kSlicesPerWarp; ++s) fma4(acc[s], f, warp_acc[row_in_block][w][s][lane]);
    }
    run_max = row_max;
  }
  if (blockIdx.y * kCombineRowsPerBlock + row_in_block >= p.q_rows) return;  // a clamped duplicate row
  const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
  const float lse = sum > 0.f ? run_max + __log2f(sum) : -INFINITY;
  Element* out = static_cast<Element*>(p.out) + (int64_t(req) * p.q_rows + q_row) * kHeadDimV + col;
#pragma unroll
  for (int s = 0; s < kSlicesPerWarp; ++s) {
    scale4(acc[s], inv_sum);
    store4(out + s * 128, acc[s]);
  }
  if (blockIdx.z == 0 && lane == 0) {
    const int s = q_row / p.num_heads_q, h = q_row % p.num_heads_q;
    p.lse[(int64_t(req) * p.num_heads_q + h) * p.seqlen_q + s] = lse * float(M_LN2);
  }
  combine_stamp(p, 2);
  combine_block_stamp(p, CombineStamp::kExit);
}

template <typename Element, int kWarpsPerRow, int kSlicesPerWarp>
void launch_combine(const DecodeParams& p, int grid_x, bool by_part, cudaStream_t stream) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(grid_x, (p.q_rows + kCombineRowsPerBlock - 1) / kCombineRowsPerBlock,
                        kColumnSlices / kSlicesPerWarp);
  config.blockDim = dim3(32 * kWarpsPerRow * kCombineRowsPerBlock);
  config.stream = stream;
  cudaLaunchAttribute pdl{};
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &pdl;
  config.numAttrs = 1;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, combine_kernel<Element, kWarpsPerRow, kSlicesPerWarp>, p, by_part));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Element>
void run_combine(const DecodeParams& p, int num_parts, int num_sms, cudaStream_t stream) {
  // Split requests number at most num_parts - 1: past that many requests, index by part.
  const bool by_part = p.batch > num_parts;
  const int grid_x = by_part ? num_parts : p.batch;
  const int64_t rows = int64_t(grid_x) * ((p.q_rows + kCombineRowsPerBlock - 1) / kCombineRowsPerBlock) *
                       kCombineRowsPerBlock;
  const int64_t wave = int64_t(num_sms) * kMaxWarpsPerSM;
  auto warps = [&](int warps_per_row, int slices_per_warp) {
    return rows * warps_per_row * (kColumnSlices / slices_per_warp);
  };
  if (warps(4, 1) <= wave) {
    launch_combine<Element, 4, 1>(p, grid_x, by_part, stream);
  } else if (warps(2, 1) <= wave) {
    launch_combine<Element, 2, 1>(p, grid_x, by_part, stream);
  } else if (warps(1, 1) <= wave) {
    launch_combine<Element, 1, 1>(p, grid_x, by_part, stream);
  } else if (warps(1, 2) <= wave) {
    launch_combine<Element, 1, 2>(p, grid_x, by_part, stream);
  } else {
    launch_combine<Element, 1, 4>(p, grid_x, by_part, stream);
  }
}

template void run_combine<__nv_bfloat16>(const DecodeParams&, int, int, cudaStream_t);
template void run_combine<__half>(const DecodeParams&, int, int, cudaStream_t);

}  // namespace mla
