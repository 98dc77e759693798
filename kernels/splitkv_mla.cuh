// Split-KV MLA decode: one CTA per (64-row M tile, scheduler part), two warpgroups.
//
// Pages go in pairs (a, b), a in stage 0 and b in stage 1. Warpgroup 0 computes S and P of
// page a, warpgroup 1 of page b; warpgroup 0 accumulates O's columns 0-255 over both pages,
// warpgroup 1 columns 256-511. Each hands the other its new row max and its P one way
// (named barriers; P through the page's rope chunk), so that one warpgroup's softmax runs
// under the other's GEMMs. Each warpgroup refills by TMA the chunks of a stage whose last
// reader it is; there is no producer warpgroup. See DESIGN.md.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/arch/barrier.h>

#include "params.h"
#include "timeline.h"
#include "traits.h"

namespace mla {

using cutlass::arch::ClusterTransactionBarrier;

// Hardware barrier ids (0 is __syncthreads). kScaleA..kPB are one-way: one warpgroup
// arrives, the other waits; kTailZeroed0/1 are local to a warpgroup.
enum class Barrier : int { kQReady = 1, kScaleA, kScaleB, kPA, kPB, kRowSum, kTailZeroed0, kTailZeroed1 };

__device__ __forceinline__ void named_sync(Barrier id, int threads = kThreads) {
  asm volatile("bar.sync %0, %1;" ::"r"(static_cast<int>(id)), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_arrive(Barrier id, int threads = kThreads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(static_cast<int>(id)), "r"(threads) : "memory");
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

// The pair (blk, blk + 1) of request req; page blk + 1 exists iff blk + 1 < end.
struct PairCursor {
  int req, blk, end;
  __device__ bool valid(const PartMetadata& m) const { return req <= m.end_req; }
};

// The first pair of the first request from `req` on that has pages in this part.
__device__ __forceinline__ PairCursor first_pair_from(const PartMetadata& m, const DecodeParams& p, int req) {
  for (; req <= m.end_req; ++req) {
    const PageRange r = part_pages(m, req, p.seqlens_k[req]);
    if (r.begin < r.end) return {req, r.begin, r.end};
  }
  return {req, 0, 0};
}

__device__ __forceinline__ PairCursor next_pair(const PartMetadata& m, const DecodeParams& p, PairCursor c) {
  return c.blk + 2 < c.end ? PairCursor{c.req, c.blk + 2, c.end} : first_pair_from(m, p, c.req + 1);
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

// Issues one warpgroup GEMM (c += a @ b over k blocks [kBegin, kEnd), all by default) as
// one wgmma batch; the caller waits with warpgroup_wait<N>() and then fences c.
template <int kBegin = 0, int kEnd = -1, class TiledMma, class FragA, class FragB, class FragC>
__device__ __forceinline__ void gemm_issue(TiledMma& mma, FragA const& a, FragB const& b, FragC& c, bool zero_init) {
  constexpr int kLast = kEnd < 0 ? decltype(size<2>(a))::value : kEnd;
  warpgroup_fence_operand(c);
  warpgroup_arrive();
  mma.accumulate_ = zero_init ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int k = kBegin; k < kLast; ++k) {
    cute::gemm(mma, a(_, _, k), b(_, _, k), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
}

// Refills this warpgroup's chunks of stage kStage with its page of pair `c`: V columns of
// its own O half (chunks 4·kWG … 4·kWG+3) and, for the stage whose P it reads from shared
// memory, the rope chunk. A page past the request's range (the missing b of an odd count)
// or past the table reads as zeros: TMA fills out-of-bounds boxes.
template <typename Traits, int kWG, int kStage>
__device__ __forceinline__ void refill_stage(typename Traits::SharedStorage& smem, const CUtensorMap* tmap_kv,
                                             const DecodeParams& p, const PairCursor& c) {
  // With one M tile a page is read once: evict it first, ahead of the split partials the
  // combine reads back right after this grid (measured: skewed batch -5%; DESIGN, "Eighth
  // session"). With several, the part's other M tiles read it again from L2 (measured: h16
  // s_q5 -4%, s_q6 -2% against evict-first; DESIGN, "Ninth session").
  const uint64_t cache_hint = static_cast<uint64_t>(p.q_rows > kBlockM ? TMA::CacheHintSm90::EVICT_NORMAL
                                                                       : TMA::CacheHintSm90::EVICT_FIRST);
  constexpr int kVChunks = kHeadDimV / 64 / kNumWarpgroups;
  constexpr bool kRope = kWG != kStage;
  const int blk = c.blk + kStage;
  const int page = blk < c.end && blk < p.max_blocks_per_seq ? p.block_table[c.req * p.block_table_stride + blk] : -1;
  uint64_t* full = &smem.kv_full[kStage][kWG];
  ClusterTransactionBarrier::arrive_and_expect_tx(full, (kVChunks + kRope) * Traits::kChunkBytes);
  CUTE_UNROLL
  for (int chunk = kWG * kVChunks; chunk < (kWG + 1) * kVChunks; ++chunk) {
    SM90_TMA_LOAD_3D::copy(tmap_kv, full, cache_hint, smem.kv[kStage] + chunk * kBlockN * 64, chunk * 64, 0, page);
  }
  if constexpr (kRope) {
    SM90_TMA_LOAD_3D::copy(tmap_kv, full, cache_hint, smem.kv[kStage] + kRopeChunk * kBlockN * 64, kRopeChunk * 64, 0,
                           page);
  }
}

// Columns [col0, col0 + kCols) of Q rows [m_block * 64, +64) of one request, read from `src`
// (that request's row 0, column col0), into the swizzled Q tile; rows past q_rows zero-filled.
// Each thread keeps one column unit and steps over rows, so the column part of both addresses is
// fixed outside the loop.
template <typename Element, int kCols>
__device__ __forceinline__ void issue_q_cols(uint32_t sq, const Element* src, int64_t seq_stride, int64_t head_stride,
                                             int col0, const DecodeParams& p, int m_block) {
  constexpr int kUnitsPerRow = kCols * sizeof(Element) / 16;
  constexpr int kRowsPerStep = kThreads / kUnitsPerRow;
  static_assert(kThreads % kUnitsPerRow == 0 && kBlockM % kRowsPerStep == 0, "Q columns split evenly over the threads");
  const int unit_col = (threadIdx.x % kUnitsPerRow) * 8;
  src += unit_col;
  // Rolled: unrolled, the source addresses stay live across the request loop and spill.
#pragma unroll 1
  for (int row = threadIdx.x / kUnitsPerRow; row < kBlockM; row += kRowsPerStep) {
    const int q_row = m_block * kBlockM + row;
    const bool valid = q_row < p.q_rows;
    const int s = valid ? q_row / p.num_heads_q : 0, h = valid ? q_row % p.num_heads_q : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                     sq + swizzled_offset(row, col0 + unit_col, sizeof(Element))),
                 "l"(src + s * seq_stride + h * head_stride), "r"(valid ? 16 : 0));
  }
}

// Q rows [m_block * 64, +64) of request `req` into the swizzled Q tile: the latent columns from
// p.q, the rope columns from p.q_pe. All of a thread's copies are put in flight at once
// (cp.async); wait_q waits.
template <typename Traits>
__device__ void issue_q_load(typename Traits::SharedStorage& smem, const DecodeParams& p, int req, int m_block) {
  using Element = typename Traits::Element;
  const uint32_t sq = static_cast<uint32_t>(__cvta_generic_to_shared(smem.q));
  issue_q_cols<Element, kHeadDimV>(sq, static_cast<const Element*>(p.q) + req * p.q_batch_stride, p.q_seq_stride,
                                   p.q_head_stride, 0, p, m_block);
  issue_q_cols<Element, kHeadDimQK - kHeadDimV>(sq, static_cast<const Element*>(p.q_pe) + req * p.q_pe_batch_stride,
                                                p.q_pe_seq_stride, p.q_pe_head_stride, kHeadDimV, p, m_block);
}

__device__ __forceinline__ void wait_q() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Per-thread view of the wgmma accumulator layout: this thread's rows are row0 and
// row0 + 8; its columns start at col0 in every 8-column group. Element e of a 64-column
// accumulator is row row0 + 8·((e/2)%2), column (e/4)·8 + col0 + e%2.
struct ThreadRows {
  int tid, lane, row0, col0;
  __device__ ThreadRows() : tid(threadIdx.x % 128), lane(threadIdx.x % 32) {
    row0 = (tid / 32) * 16 + lane / 4;
    col0 = (lane % 4) * 2;
  }
};

// Tokens past seqlen hold whatever the page held: zero this warpgroup's V columns there,
// so that P = 0 cannot meet a NaN. Whole 128-byte rows of the chunks, so the swizzle does
// not matter. The caller fences and syncs the warpgroup before the GEMM that reads them.
template <int kWG>
__device__ __forceinline__ void zero_v_tail(char* kv, int valid, int tid) {
  constexpr int kVChunks = kHeadDimV / 64 / kNumWarpgroups;
  char* base = kv + kWG * kVChunks * (kBlockN * 128);
  for (int idx = tid; idx < (kBlockN - valid) * kVChunks * 8; idx += 128) {
    const int row = valid + idx / (kVChunks * 8), chunk = (idx / 8) % kVChunks, unit = idx % 8;
    *reinterpret_cast<uint4*>(base + chunk * (kBlockN * 128) + row * 128 + unit * 16) = make_uint4(0, 0, 0, 0);
  }
}

// Masks S of page `blk` (keys at or past a row's limit) where the page reaches past some
// row's limit, and returns this thread's two row maxima in log2 units.
template <class FragS>
__device__ __forceinline__ void mask_and_row_max(FragS& s, int blk, const int (&key_limit)[2], int min_key_limit,
                                                 float scale_log2, const ThreadRows& t, float (&page_max)[2]) {
  const bool needs_mask = (blk + 1) * kBlockN > min_key_limit;
  page_max[0] = page_max[1] = -INFINITY;
  CUTE_UNROLL
  for (int e = 0; e < size(s); ++e) {
    const int j = (e / 2) % 2;
    const int key = blk * kBlockN + (e / 4) * 8 + t.col0 + e % 2;
    if (needs_mask && key >= key_limit[j]) s(e) = -INFINITY;
    page_max[j] = fmaxf(page_max[j], s(e));
  }
  CUTE_UNROLL
  for (int j = 0; j < 2; ++j) {
    page_max[j] = fmaxf(page_max[j], __shfl_xor_sync(0xffffffff, page_max[j], 1));
    page_max[j] = fmaxf(page_max[j], __shfl_xor_sync(0xffffffff, page_max[j], 2));
    page_max[j] *= scale_log2;
  }
}

// The max that P is scaled by only moves when a row's max grows by more than
// kLazyRescale (log2 units): until then P stays ≤ 2^kLazyRescale and the final division
// is exact either way.
constexpr float kLazyRescale = 8.f;
__device__ __forceinline__ float lazy_max(float old_max, float page_max) {
  return page_max > old_max + kLazyRescale ? page_max : old_max;
}

// The factor that moves values scaled by max `from` to max `to` (≥ from); exactly 1 when
// the max did not move, so that callers can skip the multiply.
__device__ __forceinline__ float rescale_factor(float from, float to) { return from == to ? 1.f : exp2f(from - to); }

// S → P = 2^(S·scale − max) in place; returns this thread's partial row sums.
template <class FragS>
__device__ __forceinline__ void exponentiate(FragS& s, const float (&max)[2], float scale_log2, float (&sum)[2]) {
  sum[0] = sum[1] = 0.f;
  CUTE_UNROLL
  for (int e = 0; e < size(s); ++e) {
    const int j = (e / 2) % 2;
    // A row with no visible key yet keeps max -inf; subtract 0 then, not -inf.
    const float sub = max[j] == -INFINITY ? 0.f : max[j];
    s(e) = exp2f(fmaf(s(e), scale_log2, -sub));
    sum[j] += s(e);
  }
}

// P of this warpgroup's page, as 16 registers of two bf16/fp16 each in accumulator order (the
// order the A operand takes them), into a swizzled 64x64 tile at `tile` by stmatrix: register
// 4k+i is 8x8 matrix i of instruction k (rows +8 for odd i, column group 2k + i/2), and lane l
// gives the address of row l % 8 of matrix l / 8.
template <typename Element>
__device__ __forceinline__ void store_p(char* tile, const uint32_t (&packed)[16], const ThreadRows& t) {
  const int matrix = t.lane / 8;
  const int row = (t.tid / 32) * 16 + (matrix % 2) * 8 + t.lane % 8;
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(tile));
  CUTE_UNROLL
  for (int k = 0; k < 4; ++k) {
    const int col = (2 * k + matrix / 2) * 8;
    asm volatile("stmatrix.sync.aligned.x4.m8n8.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(
                     base + swizzled_offset(row, col, sizeof(Element))),
                 "r"(packed[4 * k]), "r"(packed[4 * k + 1]), "r"(packed[4 * k + 2]), "r"(packed[4 * k + 3])
                 : "memory");
  }
}

// Within each quad, lane c ends with v[c] of lanes 0..3, in lane order: pairs are swapped
// with lane ^ 2, then single entries with lane ^ 1.
__device__ __forceinline__ void quad_transpose(uint32_t (&v)[4], int lane) {
  const bool upper = lane & 2, odd = lane & 1;
  uint32_t a = upper ? v[0] : v[2], b = upper ? v[1] : v[3];
  a = __shfl_xor_sync(0xffffffff, a, 2);
  b = __shfl_xor_sync(0xffffffff, b, 2);
  // Selects, not a computed index: that would put v in local memory.
  v[0] = upper ? a : v[0];
  v[1] = upper ? b : v[1];
  v[2] = upper ? v[2] : a;
  v[3] = upper ? v[3] : b;
  a = odd ? v[0] : v[1];
  b = odd ? v[2] : v[3];
  a = __shfl_xor_sync(0xffffffff, a, 1);
  b = __shfl_xor_sync(0xffffffff, b, 1);
  v[0] = odd ? a : v[0];
  v[1] = odd ? v[1] : a;
  v[2] = odd ? b : v[2];
  v[3] = odd ? v[3] : b;
}

template <class FragO>
__device__ __forceinline__ void rescale_rows(FragO& o, const float (&factor)[2]) {
  if (factor[0] != 1.f || factor[1] != 1.f) {
    CUTE_UNROLL
    for (int e = 0; e < size(o); ++e) o(e) *= factor[(e / 2) % 2];
  }
}

template <typename Traits, int kWG>
__device__ void consume(typename Traits::SharedStorage& smem, const CUtensorMap* tmap_kv, const DecodeParams& p,
                        const PartMetadata& m, int m_block, TimelineLane& stamp) {
  using Element = typename Traits::Element;
  constexpr int kDv = Traits::kHeadDimVPerWarpgroup;  // O columns of this warpgroup
  constexpr Barrier kTailZeroed = kWG == 0 ? Barrier::kTailZeroed0 : Barrier::kTailZeroed1;
  const ThreadRows t;

  typename Traits::TiledMmaQK mma_qk;
  typename Traits::TiledMmaPVRegs mma_pv_regs;
  typename Traits::TiledMmaPVSmem mma_pv_smem;
  auto thr_qk = mma_qk.get_thread_slice(t.tid);
  auto thr_pv_regs = mma_pv_regs.get_thread_slice(t.tid);
  auto thr_pv_smem = mma_pv_smem.get_thread_slice(t.tid);
  Tensor tSrQ = thr_qk.partition_fragment_A(make_tensor(make_smem_ptr(smem.q), typename Traits::SmemLayoutQ{}));

  // Per stage: K (for QK), V^T of this warpgroup's O columns, and the rope chunk as P.
  auto stage_k = [&](int s) {
    return thr_qk.partition_fragment_B(make_tensor(make_smem_ptr(smem.kv[s]), typename Traits::SmemLayoutKV{}));
  };
  auto stage_vt = [&](int s) {
    Tensor sVt = make_tensor(make_smem_ptr(smem.kv[s]), typename Traits::SmemLayoutVt{});
    return local_tile(sVt, Shape<Int<kDv>, Int<kBlockN>>{}, make_coord(Int<kWG>{}, _0{}));
  };
  auto stage_rope = [&](int s) { return smem.kv[s] + kRopeChunk * kBlockN * 64; };
  auto stage_p = [&](int s) { return make_tensor(make_smem_ptr(stage_rope(s)), typename Traits::SmemLayoutP{}); };
  auto stage_p_bytes = [&](int s) { return reinterpret_cast<char*>(stage_rope(s)); };
  Tensor tOrPOwn = thr_pv_regs.partition_fragment_A(stage_p(0));  // registers: P of this warpgroup's page
  Tensor tOrPOwnPacked = recast<uint32_t>(tOrPOwn);

  // The first request's Q goes out ahead of the first pages: issued after them, it queued
  // behind them and came in last (measured: DESIGN, "Tenth session").
  issue_q_load<Traits>(smem, p, m.begin_req, m_block);
  // The next pair to load; only thread 0 of the warpgroup issues loads.
  PairCursor to_load = first_pair_from(m, p, m.begin_req);
  if (t.tid == 0 && to_load.valid(m)) {
    refill_stage<Traits, kWG, 0>(smem, tmap_kv, p, to_load);
    refill_stage<Traits, kWG, 1>(smem, tmap_kv, p, to_load);
  }
  if (t.tid == 0) to_load = next_pair(m, p, to_load);

  uint32_t phase = 0;
  for (int req = m.begin_req; req <= m.end_req; ++req) {
    const int seqlen = p.seqlens_k[req];
    const PageRange range = part_pages(m, req, seqlen);
    if (req != m.begin_req) issue_q_load<Traits>(smem, p, req, m_block);
    wait_q();
    cutlass::arch::fence_view_async_shared();
    named_sync(Barrier::kQReady);
    stamp(Stamp::kQReady, req);

    // Row r (query token s) sees keys [0, key_limit): the causal window ends at
    // seqlen - s_q + 1 + s, and this part's pages end at range.end (the missing page b of
    // an odd count lies past it, so all its keys are masked). Pad rows past q_rows see no
    // key, so that their P is zero rather than one: tensor cores draw less power on zero
    // operands, and at the card's power cap that is clock (measured: h16 s_q1 -3%; DESIGN,
    // "Twelfth session").
    int key_limit[2];
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int q_row = m_block * kBlockM + t.row0 + 8 * j;
      const int window = p.causal ? seqlen - p.seqlen_q + 1 + q_row / p.num_heads_q : seqlen;
      key_limit[j] = q_row < p.q_rows ? min(window, range.end * kBlockN) : 0;
    }
    const int min_key_limit = min(key_limit[0], key_limit[1]);

    Tensor tOrO = partition_fragment_C(mma_pv_regs, Shape<Int<kBlockM>, Int<kDv>>{});
    clear(tOrO);
    // Per row: the max that P is scaled by (log2 units, -inf until a key is seen), the
    // same in both warpgroups, and the sum of this warpgroup's P at that scale.
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};

    Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
    // Whether warpgroup 0 computed S of its page at the end of the last pair.
    bool s_ready = false;
    for (int blk = range.begin; blk < range.end; blk += 2) {
      const int own_blk = blk + kWG;  // page a for warpgroup 0, page b for warpgroup 1
      constexpr int kOwnStage = kWG, kOtherStage = 1 - kWG;

      // S of the own page (K = 576 from shared memory) in two batches, each issued once its
      // chunks have landed (barrier phase `ph`): first the chunks this warpgroup refilled
      // itself (its V columns, freed early in the last pair), then the other's.
      constexpr int kKPerChunk = 64 / 16;
      constexpr int kOwnChunksBegin = kWG * kKPerChunk * 4, kOwnChunksEnd = kOwnChunksBegin + kKPerChunk * 4;
      Tensor tSrK = stage_k(kOwnStage);
      auto issue_qk_own_chunks = [&](uint32_t ph) {
        ClusterTransactionBarrier::wait(&smem.kv_full[kOwnStage][kWG], ph);
        gemm_issue<kOwnChunksBegin, kOwnChunksEnd>(mma_qk, tSrQ, tSrK, tSrS, /*zero_init=*/true);
      };
      auto issue_qk_other_chunks = [&](uint32_t ph) {
        ClusterTransactionBarrier::wait(&smem.kv_full[kOwnStage][1 - kWG], ph);
        if constexpr (kWG == 0) {
          gemm_issue<kOwnChunksEnd, kChunks * kKPerChunk>(mma_qk, tSrQ, tSrK, tSrS, false);
        } else {
          gemm_issue<0, kOwnChunksBegin>(mma_qk, tSrQ, tSrK, tSrS, false);
          gemm_issue<kOwnChunksEnd, kChunks * kKPerChunk>(mma_qk, tSrQ, tSrK, tSrS, false);
        }
      };
      if (!s_ready) {
        issue_qk_own_chunks(phase);
        issue_qk_other_chunks(phase);
        stamp(Stamp::kPagesIn, blk);
        warpgroup_wait<0>();
      }
      stamp(Stamp::kSReady, blk);
      warpgroup_fence_operand(tSrS);
      const int own_valid = seqlen - own_blk * kBlockN;
      const bool own_tail = own_valid > 0 && own_valid < kBlockN;
      if (own_tail) zero_v_tail<kWG>(reinterpret_cast<char*>(smem.kv[kOwnStage]), own_valid, t.tid);
      float page_max[2];
      mask_and_row_max(tSrS, own_blk, key_limit, min_key_limit, p.scale_log2, t, page_max);

      // The row max moves a → b: warpgroup 0 folds in page a, warpgroup 1 then page b.
      float (&max_slot)[kStages][kBlockM] = smem.pair_max[phase];
      float pair_max[2], own_factor[2], sum[2];
      if constexpr (kWG == 1) named_sync(Barrier::kScaleA);
      CUTE_UNROLL
      for (int j = 0; j < 2; ++j) {
        const float before = kWG == 0 ? row_max[j] : max_slot[0][t.row0 + 8 * j];
        pair_max[j] = lazy_max(before, page_max[j]);
        own_factor[j] = rescale_factor(row_max[j], pair_max[j]);
        if (t.lane % 4 == 0) max_slot[kWG][t.row0 + 8 * j] = pair_max[j];
      }
      named_arrive(kWG == 0 ? Barrier::kScaleA : Barrier::kScaleB);
      exponentiate(tSrS, pair_max, p.scale_log2, sum);
      CUTE_UNROLL
      for (int j = 0; j < 2; ++j) row_sum[j] = row_sum[j] * own_factor[j] + sum[j];
      rescale_rows(tOrO, own_factor);
      // P as the A operand: the accumulator and A-fragment orders coincide, two per register.
      uint32_t p_packed[16];
      static_assert(decltype(size(tOrPOwnPacked))::value == 16, "P of a page is 16 registers a thread");
      CUTE_UNROLL
      for (int i = 0; i < 16; ++i) tOrPOwnPacked(i) = p_packed[i] = pack2<Element>(tSrS(2 * i), tSrS(2 * i + 1));
      warpgroup_fence_operand(tOrPOwnPacked);

      if constexpr (kWG == 1) {
        // P_b is already at the pair's final scale: hand it over as is.
        store_p<Element>(stage_p_bytes(kOwnStage), p_packed, t);
        cutlass::arch::fence_view_async_shared();
        named_arrive(Barrier::kPB);
      }
      if (own_tail) {
        if constexpr (kWG == 0) cutlass::arch::fence_view_async_shared();
        named_sync(kTailZeroed, 128);
      }
      gemm_issue(mma_pv_regs, tOrPOwn, thr_pv_regs.partition_fragment_B(stage_vt(kOwnStage)), tOrO, false);

      if constexpr (kWG == 0) {
        // Hand P_a over at page b's scale, then move O to it.
        named_sync(Barrier::kScaleB);
        float to_b[2];
        CUTE_UNROLL
        for (int j = 0; j < 2; ++j) {
          const float max_b = max_slot[1][t.row0 + 8 * j];
          to_b[j] = rescale_factor(pair_max[j], max_b);
          pair_max[j] = max_b;
        }
        CUTE_UNROLL
        for (int i = 0; i < 16; ++i) {
          p_packed[i] = pack2<Element>(tSrS(2 * i) * to_b[i % 2], tSrS(2 * i + 1) * to_b[i % 2]);
        }
        store_p<Element>(stage_p_bytes(kOwnStage), p_packed, t);
        cutlass::arch::fence_view_async_shared();
        named_arrive(Barrier::kPA);
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        if (t.tid == 0 && to_load.valid(m)) refill_stage<Traits, 0, 0>(smem, tmap_kv, p, to_load);
        rescale_rows(tOrO, to_b);
        CUTE_UNROLL
        for (int j = 0; j < 2; ++j) row_sum[j] *= to_b[j];
      }

      // O += P · V of the other warpgroup's page, P from its rope chunk.
      const int other_blk = blk + 1 - kWG;
      const int other_valid = seqlen - other_blk * kBlockN;
      ClusterTransactionBarrier::wait(&smem.kv_full[kOtherStage][kWG], phase);
      named_sync(kWG == 0 ? Barrier::kPB : Barrier::kPA);
      if (other_valid > 0 && other_valid < kBlockN) {
        zero_v_tail<kWG>(reinterpret_cast<char*>(smem.kv[kOtherStage]), other_valid, t.tid);
        cutlass::arch::fence_view_async_shared();
        named_sync(kTailZeroed, 128);
      }
      gemm_issue(mma_pv_smem, thr_pv_smem.partition_fragment_A(stage_p(kOtherStage)),
                 thr_pv_smem.partition_fragment_B(stage_vt(kOtherStage)), tOrO, false);
      if constexpr (kWG == 1) {
        warpgroup_wait<1>();  // own page's P·V done: stage 1 is free for this warpgroup
        if (t.tid == 0 && to_load.valid(m)) refill_stage<Traits, 1, 1>(smem, tmap_kv, p, to_load);
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        if (t.tid == 0 && to_load.valid(m)) refill_stage<Traits, 1, 0>(smem, tmap_kv, p, to_load);
      } else {
        // The next page a of this request: QK over the chunks warpgroup 0 refilled after P_a·V
        // queues behind this P·V, so that the tensor pipe does not drain at the pair boundary.
        // Only where a part has several M tiles: its pages then come from L2 and the tensor
        // pipe sets the pace. With one M tile the wait for those chunks (from DRAM) would hold
        // back this warpgroup's refill of stage 1, which warpgroup 1 waits for (measured:
        // -1…-2% where q_rows > 64, +3% at h16 s_q1 without the condition; DESIGN, "Ninth session").
        s_ready = blk + 2 < range.end && p.q_rows > kBlockM;
        if (s_ready) {
          issue_qk_own_chunks(phase ^ 1);
          warpgroup_wait<1>();  // this P·V done, the next QK's first batch may still run
          warpgroup_fence_operand(tOrO);
          if (t.tid == 0 && to_load.valid(m)) refill_stage<Traits, 0, 1>(smem, tmap_kv, p, to_load);
          issue_qk_other_chunks(phase ^ 1);
          warpgroup_wait<0>();
        } else {
          warpgroup_wait<0>();
          warpgroup_fence_operand(tOrO);
          if (t.tid == 0 && to_load.valid(m)) refill_stage<Traits, 0, 1>(smem, tmap_kv, p, to_load);
        }
      }
      if (t.tid == 0 && to_load.valid(m)) to_load = next_pair(m, p, to_load);
      CUTE_UNROLL
      for (int j = 0; j < 2; ++j) row_max[j] = pair_max[j];
      phase ^= 1;
      stamp(Stamp::kPairEnd, blk);
    }

    // Epilogue: the row sum is split across the quad and across the two warpgroups.
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) {
      row_sum[j] += __shfl_xor_sync(0xffffffff, row_sum[j], 1);
      row_sum[j] += __shfl_xor_sync(0xffffffff, row_sum[j], 2);
      if (t.lane % 4 == 0) smem.row_sum[kWG][t.row0 + 8 * j] = row_sum[j];
    }
    named_sync(Barrier::kRowSum);

    const int first_split = p.num_splits[req];
    const bool is_split = p.num_splits[req + 1] - first_split > 1;
    const int split_idx = first_split + (req == m.begin_req ? m.begin_split : 0);
    // A quad holds 8 consecutive columns of its row per accumulator group k (two a lane), half
    // of a 32-byte sector in 16 bits. So the quad is transposed over groups 4m..4m+3 first:
    // each lane then holds one whole group, and the quad stores 32 consecutive columns at once
    // (measured: DESIGN, "Tenth session"). Partials are in q's dtype too, which halves the
    // split traffic: a partial is a convex mix of V rows, so its rounding adds at most one
    // rounding of the output's dtype (DESIGN, "Eleventh session"). All lanes shuffle; rows
    // past q_rows only skip the stores.
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int r = t.row0 + 8 * j;
      const int q_row = m_block * kBlockM + r;
      const bool row_valid = q_row < p.q_rows;
      const float sum = smem.row_sum[0][r] + smem.row_sum[1][r];
      const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
      // log2-domain LSE; -inf for a row that saw no key.
      const float lse2 = sum > 0.f ? row_max[j] + __log2f(sum) : -INFINITY;
      // A split request's piece goes to its partial slot, a whole request to out.
      Element* o = static_cast<Element*>(is_split ? p.out_accum : p.out) +
                   (int64_t(is_split ? split_idx : req) * p.q_rows + q_row) * kHeadDimV + kWG * kDv +
                   8 * (t.lane % 4);
      CUTE_UNROLL
      for (int m = 0; m < kDv / 32; ++m) {
        uint32_t pairs[4];
        CUTE_UNROLL
        for (int i = 0; i < 4; ++i) {
          const int e = 2 * j + 4 * (4 * m + i);
          pairs[i] = pack2<Element>(tOrO(e) * inv_sum, tOrO(e + 1) * inv_sum);
        }
        quad_transpose(pairs, t.lane);
        if (row_valid) *reinterpret_cast<uint4*>(o + 32 * m) = make_uint4(pairs[0], pairs[1], pairs[2], pairs[3]);
      }
      if (kWG == 0 && t.lane % 4 == 0 && row_valid) {
        if (is_split) {
          p.lse_accum[int64_t(q_row) * p.splits_capacity + split_idx] = lse2;
        } else {
          const int s = q_row / p.num_heads_q, h = q_row % p.num_heads_q;
          p.lse[(int64_t(req) * p.num_heads_q + h) * p.seqlen_q + s] = lse2 * float(M_LN2);
        }
      }
    }
    stamp(Stamp::kStored, is_split);
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
  TimelineLane stamp(p, threadIdx.x / 128, threadIdx.x % 128 == 0);
  stamp(Stamp::kEntry, blockIdx.y);
  const PartMetadata m = p.metadata[blockIdx.y];
  if (m.begin_req >= p.batch) return;  // an empty part

  if (threadIdx.x == 0) {
    CUTE_UNROLL
    for (int s = 0; s < kStages; ++s) {
      CUTE_UNROLL
      for (int w = 0; w < kNumWarpgroups; ++w) ClusterTransactionBarrier::init(&smem.kv_full[s][w], 1);
    }
    cutlass::arch::fence_barrier_init();
    cute::prefetch_tma_descriptor(&tmap_kv);
  }
  __syncthreads();
  stamp(Stamp::kStart, blockIdx.x);

  if (threadIdx.x < 128) {
    consume<Traits, 0>(smem, &tmap_kv, p, m, blockIdx.x, stamp);
  } else {
    consume<Traits, 1>(smem, &tmap_kv, p, m, blockIdx.x, stamp);
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
