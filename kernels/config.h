// Compile-time shape of the MLA decode problem and of the kernel's tiles.
#pragma once

namespace mla {

// Problem: one KV head of 576 = 512 latent + 64 rope; V is the first 512 columns of K.
constexpr int kHeadDimQK = 576;
constexpr int kHeadDimV = 512;
constexpr int kPageSize = 64;

// Tiles: 64 query rows (s_q * h_q flattened) against one 64-token page per step. Pages
// go in pairs: page a of a pair in stage 0, page b in stage 1.
constexpr int kBlockM = 64;
constexpr int kBlockN = kPageSize;
constexpr int kStages = 2;
// A page in shared memory is nine 64-column chunks (one TMA box each); chunk 8 is the rope.
constexpr int kChunks = kHeadDimQK / 64;
constexpr int kRopeChunk = kChunks - 1;

// Two warpgroups, each owning one page of a pair for QK/softmax and one half of O's columns.
constexpr int kNumWarpgroups = 2;
constexpr int kThreads = 128 * kNumWarpgroups;

// Scheduler: work is counted in page pairs (the main loop's step; a lone last page costs a
// pair), and a request costs its pairs plus this many pairs' worth of fixed work (loading
// Q, writing O and the partial-result traffic of a split).
constexpr int kFixedCostPairs = 3;
constexpr int kMetadataFields = 8;

}  // namespace mla
