// Shared-memory layouts and wgmma tiles of the split-KV decode kernel.
#pragma once
#include <cute/tensor.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cutlass/numeric_types.h>

#include "config.h"

namespace mla {

using namespace cute;

template <typename Element_>
struct DecodeTraits {
  using Element = Element_;

  // Q and each KV page are K-major tiles of 64 rows x 576 columns, stored as nine
  // 64x64 column chunks with the 128-byte swizzle. This is exactly what one 3-D TMA
  // box of 64 columns x 64 rows writes, so a page lands as nine boxes.
  using SmemLayoutAtom = GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutQ = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kHeadDimQK>>{}));
  using SmemLayoutKV = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kHeadDimQK>>{}));
  // V^T seen in the same bytes: (512 dims, 64 tokens), dims contiguous, so that
  // Vt(d, t) and KV(t, d) are one address. Tiling tokens first keeps the 64-dim
  // chunks 4096 elements apart, as the TMA boxes left them.
  using SmemLayoutVt = decltype(tile_to_shape(GMMA::Layout_MN_SW128_Atom<Element>{},
                                              Shape<Int<kHeadDimV>, Int<kBlockN>>{}, Step<_2, _1>{}));
  // P = softmax(S) of a page as the A operand of P @ V (64 query rows x 64 tokens). The
  // warpgroup that does not own the page reads it from that page's rope chunk, which no
  // GEMM needs once the owner's QK is done.
  using SmemLayoutP = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kBlockN>>{}));

  // Each warpgroup computes S for a whole page ...
  using TiledMmaQK = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<Int<kBlockM>, Int<kBlockN>, _16>,
                           GMMA::Major::K, GMMA::Major::K>()));
  // ... and accumulates O for its half of the 512 output columns over both pages of a pair:
  // P of its own page from registers, P of the other's page from shared memory.
  static constexpr int kHeadDimVPerWarpgroup = kHeadDimV / kNumWarpgroups;
  using TiledMmaPVRegs = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<Int<kBlockM>, Int<kHeadDimVPerWarpgroup>, _16>,
                           GMMA::Major::K, GMMA::Major::MN>()));
  using TiledMmaPVSmem = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<Int<kBlockM>, Int<kHeadDimVPerWarpgroup>, _16>,
                           GMMA::Major::K, GMMA::Major::MN>()));

  struct SharedStorage {
    alignas(1024) Element q[cosize_v<SmemLayoutQ>];
    alignas(1024) Element kv[kStages][cosize_v<SmemLayoutKV>];
    // Row max after page a (stage 0) and after page b (stage 1), double-buffered by pair
    // parity so that a pair's writes never meet the previous pair's reads.
    float pair_max[2][kStages][kBlockM];
    float row_sum[kNumWarpgroups][kBlockM];
    uint64_t kv_full[kStages][kNumWarpgroups];  // [stage][w]: the chunks of the stage that warpgroup w refills
  };
  static constexpr int kSmemBytes = sizeof(SharedStorage) + 1024;  // + room to align the base
  static constexpr int kChunkBytes = kBlockN * 64 * sizeof(Element);
};

}  // namespace mla
