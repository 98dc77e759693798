// Plain-data arguments of the three kernels.
#pragma once
#include <cstdint>

namespace mla {

// One row of tile-scheduler metadata (see kernels/DESIGN.md, "Scheduler").
struct PartMetadata {
  int begin_req;        // first request, inclusive; >= batch marks an empty part
  int begin_block;      // first page of begin_req covered by this part
  int end_req;          // last request, inclusive
  int end_block;        // one past the last page of end_req covered by this part
  int begin_split;      // index of this part's piece among the pieces of begin_req
  int reserved[3];
};
static_assert(sizeof(PartMetadata) == 8 * sizeof(int), "metadata row is 8 int32");

struct DecodeParams {
  int batch;
  int seqlen_q;
  int num_heads_q;
  int q_rows;           // seqlen_q * num_heads_q: the M dimension of one request
  bool causal;
  float scale_log2;     // softmax_scale * log2(e)

  // Q's 512 latent columns and its 64 rope columns, each [batch, seqlen_q, num_heads_q, *] with
  // its own strides: apart where the engine hands them over apart, else q_pe = q + 512.
  const void* q;
  int64_t q_batch_stride, q_seq_stride, q_head_stride;
  const void* q_pe;
  int64_t q_pe_batch_stride, q_pe_seq_stride, q_pe_head_stride;
  void* out;            // [batch, seqlen_q, num_heads_q, 512], contiguous
  float* lse;           // [batch, num_heads_q, seqlen_q], contiguous

  void* out_accum;      // [splits_capacity, q_rows, 512], q's dtype: partial outputs of split requests
  float* lse_accum;     // [q_rows, splits_capacity]: their log2-domain LSE, a row's pieces side by side
  int splits_capacity;  // batch + parts: at least the pieces of all requests

  const int* block_table;
  int64_t block_table_stride;
  int max_blocks_per_seq;
  const int* seqlens_k;

  const PartMetadata* metadata;
  const int* num_splits;  // [batch + 1], cumulative
#ifdef MLA_TIMELINE
  int64_t* timeline;          // [parts * M tiles * 2, kTimelineStamps, 2] (timeline.h)
  int64_t* timeline_combine;  // [kCombineStamps + kCombineBlocksTimed * kCombineBlockStamps]
#endif
};

}  // namespace mla
