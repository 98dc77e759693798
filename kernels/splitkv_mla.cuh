// Split-KV MLA decode: one CTA per (64-row M tile, scheduler part).
//
// Warpgroup 0 is the producer: one thread streams the part's KV pages into a
// two-stage shared-memory ring with TMA. Warpgroups 1 and 2 are consumers: for
// every page each computes S for half of the page's 64 tokens, they agree on the
// row max through shared memory, each writes its half of P, and each accumulates
// O for its half of the 512 output columns over all 64 tokens. See DESIGN.md.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "params.h"
#include "traits.h"

namespace mla {

using cutlass::arch::ClusterBarrier;
using cutlass::arch::ClusterTransactionBarrier;

// Hardware barrier ids among the 256 consumer threads (0 is __syncthreads).
enum class ConsumerBarrier : int { kQReady = 1, kRowMax = 2, kPReady = 3, kRowSum = 4 };

__device__ __forceinline__ void consumer_sync(ConsumerBarrier id) {
  asm volatile("bar.sync %0, %1;" ::"r"(static_cast<int>(id)), "r"(128 * kNumConsumerWarpgroups));
}

// Byte offset of element (row, col) in a K-major tile of 64-column chunks with the
// 128-byte swizzle: 16-byte units of a 128-byte row are permuted by (row % 8).
__device__ __forceinline__ int swizzled_offset(int row, int col, int elem_bytes) {
  const int chunk = col / 64;
  const int byte_in_row = (col % 64) * elem_bytes;
  return chunk * (kBlockM * 128) + row * 128 + ((((byte_in_row >> 4) ^ (row & 7)) << 4) | (byte_in_row & 15));
}

struct PageRange {
  int begin, end;
};

// The pages of request `req` that this part covers.
__device__ __forceinline__ PageRange part_pages(const PartMetadata& m, int req, int seqlen) {
  return {req == m.begin_req ? m.begin_block : 0,
          req == m.end_req ? m.end_block : (seqlen + kBlockN - 1) / kBlockN};
}

template <typename Element>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<cutlass::bfloat16_t>(float a, float b) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<cutlass::half_t>(float a, float b) {
  __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}

template <class TiledMma, class FragA, class FragB, class FragC>
__device__ __forceinline__ void warpgroup_gemm(TiledMma& mma, FragA const& a, FragB const& b, FragC& c,
                                               bool zero_init) {
  warpgroup_fence_operand(c);
  warpgroup_arrive();
  mma.accumulate_ = zero_init ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(a); ++k) {
    cute::gemm(mma, a(_, _, k), b(_, _, k), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_wait<0>();
  warpgroup_fence_operand(c);
}

template <typename Traits>
__device__ void produce_kv(typename Traits::SharedStorage& smem, const CUtensorMap* tmap_kv,
                           const DecodeParams& p, const PartMetadata& m) {
  constexpr uint64_t kCacheHint = static_cast<uint64_t>(TMA::CacheHintSm90::EVICT_NORMAL);
  int stage = 0;
  uint32_t phase = 0;
  for (int req = m.begin_req; req <= m.end_req; ++req) {
    const int* pages = p.block_table + req * p.block_table_stride;
    const PageRange range = part_pages(m, req, p.seqlens_k[req]);
    for (int blk = range.begin; blk < range.end; ++blk) {
      ClusterBarrier::wait(&smem.kv_empty[stage], phase ^ 1);
      // A page past the table reads as zeros (TMA fills out-of-bounds boxes).
      const int page = blk < p.max_blocks_per_seq ? pages[blk] : -1;
      ClusterTransactionBarrier::arrive_and_expect_tx(&smem.kv_full[stage], Traits::kKVPageBytes);
      CUTE_UNROLL
      for (int chunk = 0; chunk < kHeadDimQK / 64; ++chunk) {
        SM90_TMA_LOAD_3D::copy(tmap_kv, &smem.kv_full[stage], kCacheHint,
                               smem.kv[stage] + chunk * kBlockN * 64, chunk * 64, 0, page);
      }
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
  }
}

// Q rows [m_block * 64, +64) of request `req` into the swizzled Q tile, rows past q_rows
// zero-filled. All of a thread's copies are in flight at once (cp.async), then waited for.
template <typename Traits>
__device__ void load_q(typename Traits::SharedStorage& smem, const DecodeParams& p, int req, int m_block,
                       int consumer_tid) {
  using Element = typename Traits::Element;
  constexpr int kUnitsPerRow = kHeadDimQK * sizeof(Element) / 16;
  const Element* q = static_cast<const Element*>(p.q) + req * p.q_batch_stride;
  const uint32_t sq = static_cast<uint32_t>(__cvta_generic_to_shared(smem.q));
  constexpr int kConsumerThreads = 128 * kNumConsumerWarpgroups;
  static_assert(kBlockM * kUnitsPerRow % kConsumerThreads == 0, "Q tile splits evenly over the consumers");
  CUTE_UNROLL
  for (int i = 0; i < kBlockM * kUnitsPerRow / kConsumerThreads; ++i) {
    const int idx = consumer_tid + i * kConsumerThreads;
    const int row = idx / kUnitsPerRow, col = (idx % kUnitsPerRow) * 8;
    const int q_row = m_block * kBlockM + row;
    const bool valid = q_row < p.q_rows;
    const int s = valid ? q_row / p.num_heads_q : 0, h = valid ? q_row % p.num_heads_q : 0;
    const Element* src = q + s * p.q_seq_stride + h * p.q_head_stride + col;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sq + swizzled_offset(row, col, sizeof(Element))),
                 "l"(src), "r"(valid ? 16 : 0));
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

template <typename Traits, int kWG>
__device__ void consume(typename Traits::SharedStorage& smem, const DecodeParams& p, const PartMetadata& m,
                        int m_block) {
  using Element = typename Traits::Element;
  constexpr int kN = Traits::kBlockNPerWarpgroup;     // S columns (tokens) of this warpgroup
  constexpr int kDv = Traits::kHeadDimVPerWarpgroup;  // O columns of this warpgroup
  constexpr float kNegInf = -INFINITY;
  const int tid = threadIdx.x % 128;
  const int consumer_tid = threadIdx.x - 128;
  const int lane = tid % 32;
  // This thread's accumulator rows are row0 and row0 + 8; its columns start at col0 in
  // every 8-column group (the wgmma accumulator layout).
  const int row0 = (tid / 32) * 16 + lane / 4;
  const int col0 = (lane % 4) * 2;

  typename Traits::TiledMmaQK mma_qk;
  typename Traits::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(tid);
  auto thr_pv = mma_pv.get_thread_slice(tid);
  Tensor tSrQ = thr_qk.partition_fragment_A(make_tensor(make_smem_ptr(smem.q), typename Traits::SmemLayoutQ{}));
  Tensor tOrP = thr_pv.partition_fragment_A(make_tensor(make_smem_ptr(smem.p), typename Traits::SmemLayoutP{}));
  char* sp = reinterpret_cast<char*>(smem.p);

  int stage = 0;
  uint32_t phase = 0;
  for (int req = m.begin_req; req <= m.end_req; ++req) {
    const int seqlen = p.seqlens_k[req];
    const PageRange range = part_pages(m, req, seqlen);
    load_q<Traits>(smem, p, req, m_block, consumer_tid);
    cutlass::arch::fence_view_async_shared();
    consumer_sync(ConsumerBarrier::kQReady);

    // Row r (query token s) sees keys [0, key_limit): the causal window ends at
    // seqlen - s_q + 1 + s.
    int key_limit[2];
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int q_row = min(m_block * kBlockM + row0 + 8 * j, p.q_rows - 1);
      key_limit[j] = p.causal ? seqlen - p.seqlen_q + 1 + q_row / p.num_heads_q : seqlen;
    }

    Tensor tOrO = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<kDv>>{});
    clear(tOrO);
    // Per row: the max that P is scaled by (log2 units, -inf until a key is seen) and the
    // sum of P at that scale.
    float scaled_max[2] = {kNegInf, kNegInf};
    float row_sum[2] = {0.f, 0.f};
    const int min_key_limit = min(key_limit[0], key_limit[1]);

    for (int blk = range.begin; blk < range.end; ++blk) {
      ClusterTransactionBarrier::wait(&smem.kv_full[stage], phase);
      Element* kv = smem.kv[stage];

      Tensor sK = make_tensor(make_smem_ptr(kv), typename Traits::SmemLayoutKV{});
      Tensor tSrK = thr_qk.partition_fragment_B(local_tile(sK, Shape<Int<kN>, Int<kHeadDimQK>>{}, make_coord(Int<kWG>{}, _0{})));
      Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kN>>{});
      warpgroup_gemm(mma_qk, tSrQ, tSrK, tSrS, /*zero_init=*/true);

      // Tokens past seqlen hold whatever the page held: zero this warpgroup's V
      // columns there, so that P = 0 cannot meet a NaN. Whole 128-byte rows of the
      // chunks, so the swizzle does not matter.
      const int valid = seqlen - blk * kBlockN;
      if (valid < kBlockN) {
        constexpr int kChunks = kDv / 64;
        char* base = reinterpret_cast<char*>(kv) + kWG * kChunks * (kBlockN * 128);
        for (int idx = tid; idx < (kBlockN - valid) * kChunks * 8; idx += 128) {
          const int row = valid + idx / (kChunks * 8), chunk = (idx / 8) % kChunks, unit = idx % 8;
          *reinterpret_cast<uint4*>(base + chunk * (kBlockN * 128) + row * 128 + unit * 16) = make_uint4(0, 0, 0, 0);
        }
      }

      // Mask (only a page that reaches past a row's window), then this warpgroup's row
      // max over its 32 tokens.
      const bool needs_mask = (blk + 1) * kBlockN > min_key_limit;
      float local_max[2] = {kNegInf, kNegInf};
      CUTE_UNROLL
      for (int e = 0; e < size(tSrS); ++e) {
        const int j = (e / 2) % 2;
        const int key = blk * kBlockN + kWG * kN + (e / 4) * 8 + col0 + e % 2;
        if (needs_mask && key >= key_limit[j]) tSrS(e) = kNegInf;
        local_max[j] = fmaxf(local_max[j], tSrS(e));
      }
      CUTE_UNROLL
      for (int j = 0; j < 2; ++j) {
        local_max[j] = fmaxf(local_max[j], __shfl_xor_sync(0xffffffff, local_max[j], 1));
        local_max[j] = fmaxf(local_max[j], __shfl_xor_sync(0xffffffff, local_max[j], 2));
        if (lane % 4 == 0) smem.row_max[kWG][row0 + 8 * j] = local_max[j];
      }
      consumer_sync(ConsumerBarrier::kRowMax);

      // Both warpgroups hold the same scaled_max state and read the same page maxima, so
      // they make the same choice. A max that grew by at most kLazyRescale keeps the old
      // scale: P stays ≤ 2^kLazyRescale and the final division is exact either way.
      constexpr float kLazyRescale = 8.f;
      float rescale[2] = {1.f, 1.f};
      bool any_rescale = false;
      CUTE_UNROLL
      for (int j = 0; j < 2; ++j) {
        const int r = row0 + 8 * j;
        const float page_max = fmaxf(smem.row_max[0][r], smem.row_max[1][r]) * p.scale_log2;
        if (page_max > scaled_max[j] + kLazyRescale) {
          rescale[j] = exp2f(scaled_max[j] - page_max);
          scaled_max[j] = page_max;
          row_sum[j] *= rescale[j];
          any_rescale = true;
        }
      }
      CUTE_UNROLL
      for (int e = 0; e < size(tSrS); e += 2) {
        const int j = (e / 2) % 2;
        // A row with no visible key yet keeps max -inf; subtract 0 then, not -inf.
        const float sub = scaled_max[j] == kNegInf ? 0.f : scaled_max[j];
        const float p0 = exp2f(fmaf(tSrS(e), p.scale_log2, -sub));
        const float p1 = exp2f(fmaf(tSrS(e + 1), p.scale_log2, -sub));
        row_sum[j] += p0 + p1;
        const int col = kWG * kN + (e / 4) * 8 + col0;
        *reinterpret_cast<uint32_t*>(sp + swizzled_offset(row0 + 8 * j, col, sizeof(Element))) =
            pack2<Element>(p0, p1);
      }
      if (any_rescale) {
        CUTE_UNROLL
        for (int e = 0; e < size(tOrO); ++e) tOrO(e) *= rescale[(e / 2) % 2];
      }
      cutlass::arch::fence_view_async_shared();
      consumer_sync(ConsumerBarrier::kPReady);

      Tensor sVt = make_tensor(make_smem_ptr(kv), typename Traits::SmemLayoutVt{});
      Tensor tOrV = thr_pv.partition_fragment_B(local_tile(sVt, Shape<Int<kDv>, Int<kBlockN>>{}, make_coord(Int<kWG>{}, _0{})));
      warpgroup_gemm(mma_pv, tOrP, tOrV, tOrO, /*zero_init=*/false);
      if (tid == 0) ClusterBarrier::arrive(&smem.kv_empty[stage]);
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }

    // Epilogue: the row sum is split across the quad and across the two warpgroups.
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) {
      row_sum[j] += __shfl_xor_sync(0xffffffff, row_sum[j], 1);
      row_sum[j] += __shfl_xor_sync(0xffffffff, row_sum[j], 2);
      if (lane % 4 == 0) smem.row_sum[kWG][row0 + 8 * j] = row_sum[j];
    }
    consumer_sync(ConsumerBarrier::kRowSum);

    const int first_split = p.num_splits[req];
    const bool is_split = p.num_splits[req + 1] - first_split > 1;
    const int split_idx = first_split + (req == m.begin_req ? m.begin_split : 0);
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int r = row0 + 8 * j;
      const int q_row = m_block * kBlockM + r;
      if (q_row >= p.q_rows) continue;
      const float sum = smem.row_sum[0][r] + smem.row_sum[1][r];
      const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
      // log2-domain LSE; -inf for a row that saw no key.
      const float lse2 = sum > 0.f ? scaled_max[j] + __log2f(sum) : kNegInf;
      if (is_split) {
        float* o = p.out_accum + (int64_t(split_idx) * p.q_rows + q_row) * kHeadDimV + kWG * kDv + col0;
        CUTE_UNROLL
        for (int e = 2 * j; e < size(tOrO); e += 4) {
          *reinterpret_cast<float2*>(o + (e / 4) * 8) = make_float2(tOrO(e) * inv_sum, tOrO(e + 1) * inv_sum);
        }
        if (kWG == 0 && lane % 4 == 0) p.lse_accum[int64_t(split_idx) * p.q_rows + q_row] = lse2;
      } else {
        Element* o = static_cast<Element*>(p.out) + (int64_t(req) * p.q_rows + q_row) * kHeadDimV + kWG * kDv + col0;
        CUTE_UNROLL
        for (int e = 2 * j; e < size(tOrO); e += 4) {
          *reinterpret_cast<uint32_t*>(o + (e / 4) * 8) = pack2<Element>(tOrO(e) * inv_sum, tOrO(e + 1) * inv_sum);
        }
        if (kWG == 0 && lane % 4 == 0) {
          const int s = q_row / p.num_heads_q, h = q_row % p.num_heads_q;
          p.lse[(int64_t(req) * p.num_heads_q + h) * p.seqlen_q + s] = lse2 * float(M_LN2);
        }
      }
    }
  }
}

template <typename Traits>
__global__ void __launch_bounds__(kThreads, 1)
    splitkv_mla_kernel(const __grid_constant__ CUtensorMap tmap_kv, const __grid_constant__ DecodeParams p) {
  extern __shared__ char smem_raw[];
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  // The combine kernel may launch now: it waits for this grid to finish before reading,
  // so only its launch and prologue overlap this kernel's tail.
  cudaTriggerProgrammaticLaunchCompletion();
  const PartMetadata m = p.metadata[blockIdx.y];
  if (m.begin_req >= p.batch) return;  // an empty part

  if (threadIdx.x == 0) {
    CUTE_UNROLL
    for (int s = 0; s < kStages; ++s) {
      ClusterTransactionBarrier::init(&smem.kv_full[s], 1);
      ClusterBarrier::init(&smem.kv_empty[s], kNumConsumerWarpgroups);
    }
    cutlass::arch::fence_barrier_init();
    cute::prefetch_tma_descriptor(&tmap_kv);
  }
  __syncthreads();

  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    cutlass::arch::warpgroup_reg_dealloc<40>();
    if (threadIdx.x == 0) produce_kv<Traits>(smem, &tmap_kv, p, m);
  } else {
    cutlass::arch::warpgroup_reg_alloc<232>();
    if (warpgroup == 1) {
      consume<Traits, 0>(smem, p, m, blockIdx.x);
    } else {
      consume<Traits, 1>(smem, p, m, blockIdx.x);
    }
  }
}

template <typename Element>
void run_splitkv_mla(const DecodeParams& p, const CUtensorMap& tmap_kv, int num_m_blocks, int num_parts,
                     cudaStream_t stream) {
  using Traits = DecodeTraits<Element>;
  auto kernel = splitkv_mla_kernel<Traits>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSmemBytes));
  kernel<<<dim3(num_m_blocks, num_parts), kThreads, Traits::kSmemBytes, stream>>>(tmap_kv, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace mla
