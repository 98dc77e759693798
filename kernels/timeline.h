// In-kernel timeline for diagnosis: %globaltimer stamps at the main loop's milestones, one
// lane per (part, M tile, warpgroup), plus the combine's first start and last exit, and the
// milestones of each of its first kCombineBlocksTimed blocks. Built only with MLA_TIMELINE=1
// (setup.py) and read by benchmarks/timeline_decode.py; otherwise every stamp compiles to
// nothing.
#pragma once
#include <cstdint>

#include "config.h"
#include "params.h"

namespace mla {

// kPagesIn: both chunk groups of a warpgroup's own page have landed and its QK is issued (loop top).
enum class Stamp : int { kEntry, kStart, kQReady, kSReady, kPairEnd, kStored, kPagesIn };

// Stamps a lane keeps (later ones are dropped); two int64 each: ns, and
// stamp | smid << 8 | arg << 24.
constexpr int kTimelineStamps = 1024;
// The combine's earliest entry, earliest return from its grid-dependency wait, latest exit.
constexpr int kCombineStamps = 3;
// Then per combine block (its thread 0): the return from the wait, the first batch of pieces
// in, the last multiply done, the exit (0 where the block had nothing to merge), and
// smid | pieces << 16.
enum class CombineStamp : int { kWaited, kFirstBatch, kMerged, kExit, kInfo };
constexpr int kCombineBlockStamps = 5;
constexpr int kCombineBlocksTimed = 1 << 16;

#ifdef __CUDACC__
#ifdef MLA_TIMELINE
__device__ __forceinline__ int64_t global_ns() {
  uint64_t ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  return static_cast<int64_t>(ns);
}

__device__ __forceinline__ int64_t sm_id() {
  uint32_t smid;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
  return smid;
}

struct TimelineLane {
  int64_t* records;  // null for threads that do not record
  int count = 0;
  __device__ TimelineLane(const DecodeParams& p, int warpgroup, bool recorder)
      : records(recorder ? p.timeline + (int64_t(blockIdx.y * gridDim.x + blockIdx.x) * kNumWarpgroups + warpgroup) *
                                            kTimelineStamps * 2
                         : nullptr) {}
  __device__ void operator()(Stamp s, int arg = 0) {
    if (records == nullptr || count >= kTimelineStamps) return;
    records[2 * count] = global_ns();
    records[2 * count + 1] = static_cast<int>(s) | sm_id() << 8 | int64_t(arg) << 24;
    ++count;
  }
};

// slot: 0 entry, 1 after the dependency wait (both the earliest), 2 exit (the latest).
__device__ __forceinline__ void combine_stamp(const DecodeParams& p, int slot) {
  if (threadIdx.x != 0) return;
  auto* s = reinterpret_cast<unsigned long long*>(p.timeline_combine + slot);
  const auto ns = static_cast<unsigned long long>(global_ns());
  if (slot < 2) atomicMin(s, ns);
  else atomicMax(s, ns);
}

__device__ __forceinline__ void combine_block_stamp(const DecodeParams& p, CombineStamp s, int pieces = 0) {
  const int64_t block = blockIdx.x + int64_t(gridDim.x) * (blockIdx.y + int64_t(gridDim.y) * blockIdx.z);
  if (threadIdx.x != 0 || block >= kCombineBlocksTimed) return;
  int64_t* r = p.timeline_combine + kCombineStamps + block * kCombineBlockStamps;
  r[static_cast<int>(s)] = s == CombineStamp::kInfo ? sm_id() | int64_t(pieces) << 16 : global_ns();
}
#else
struct TimelineLane {
  __device__ TimelineLane(const DecodeParams&, int, bool) {}
  __device__ void operator()(Stamp, int = 0) {}
};
__device__ __forceinline__ void combine_stamp(const DecodeParams&, int) {}
__device__ __forceinline__ void combine_block_stamp(const DecodeParams&, CombineStamp, int = 0) {}
#endif  // MLA_TIMELINE
#endif  // __CUDACC__

}  // namespace mla
