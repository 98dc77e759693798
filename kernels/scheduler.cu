// Tile-scheduler metadata: pours the batch's pages, in request order and in pairs, into
// num_parts parts of near-equal cost, or gives each request a part of its own where that is
// no costlier. One warp, no host synchronisation.
// The same algorithm, in Python, is mla_backend.reference.schedule_parts.
#include <c10/cuda/CUDAException.h>

#include "config.h"
#include "kernels.h"
#include "params.h"

namespace mla {

__global__ void __launch_bounds__(32, 1)
    mla_metadata_kernel(const int* __restrict__ seqlens_k, int batch, int num_parts,
                        PartMetadata* __restrict__ metadata, int* __restrict__ num_splits) {
  const int lane = threadIdx.x;
  auto num_pages = [&](int req) { return (max(seqlens_k[req], 0) + kBlockN - 1) / kBlockN; };
  auto pairs_from = [&](int req, int blk) { return (num_pages(req) - blk + 1) / 2; };

  int total_cost = 0, max_cost = 0;
  for (int req = lane; req < batch; req += 32) {
    const int cost = pairs_from(req, 0) + kFixedCostPairs;
    total_cost += cost;
    max_cost = max(max_cost, cost);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    total_cost += __shfl_xor_sync(0xffffffff, total_cost, offset);
    max_cost = max(max_cost, __shfl_xor_sync(0xffffffff, max_cost, offset));
  }
  const int payload = (total_cost + num_parts - 1) / num_parts + kFixedCostPairs;
  const PartMetadata empty_part = {batch, 0, batch - 1, 0, 0, {0, 0, 0}};

  if (batch <= num_parts && max_cost <= payload) {
    // One whole request a part: no part exceeds the payload, and nothing needs the combine.
    for (int part = lane; part < num_parts; part += 32) {
      metadata[part] = part < batch ? PartMetadata{part, 0, part, num_pages(part), 0, {0, 0, 0}} : empty_part;
    }
    for (int i = lane; i <= batch; i += 32) num_splits[i] = i;
    return;
  }
  if (lane != 0) return;

  int req = 0, blk = 0, pieces_done = 0;  // the next page (even) to place, and how many pieces of req precede it
  for (int part = 0; part < num_parts; ++part) {
    PartMetadata m = {req, blk, req, blk, pieces_done, {0, 0, 0}};
    if (req >= batch) {
      m = empty_part;
    } else {
      const bool last_part = part == num_parts - 1;
      int budget = payload;
      while (req < batch) {
        const int remaining = pairs_from(req, blk);
        if (last_part || budget >= remaining + kFixedCostPairs) {
          budget -= remaining + kFixedCostPairs;
          m.end_req = req;
          m.end_block = num_pages(req);
          num_splits[req + 1] = pieces_done + 1;
          ++req;
          blk = 0;
          pieces_done = 0;
        } else {
          const int take = budget - kFixedCostPairs;
          if (take > 0) {  // split req: this part ends inside it, after `take` pairs
            m.end_req = req;
            m.end_block = blk + 2 * take;
            blk += 2 * take;
            ++pieces_done;
          }
          break;
        }
      }
    }
    metadata[part] = m;
  }
  num_splits[0] = 0;
  for (int i = 0; i < batch; ++i) num_splits[i + 1] += num_splits[i];
}

void run_mla_metadata(const int* seqlens_k, int batch, int num_parts, int* metadata, int* num_splits,
                      cudaStream_t stream) {
  mla_metadata_kernel<<<1, 32, 0, stream>>>(seqlens_k, batch, num_parts,
                                           reinterpret_cast<PartMetadata*>(metadata), num_splits);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace mla
