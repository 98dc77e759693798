// Torch custom-op implementations for CUDA tensors. The op schemas are defined in
// mla_backend/ops.py, which also validates arguments with Python errors first;
// the checks here guard direct callers of torch.ops.mla_backend.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudaTypedefs.h>
#include <cutlass/numeric_types.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "config.h"
#include "kernels.h"
#include "params.h"
#include "timeline.h"

namespace mla {
namespace {

int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

int num_sms(const at::Tensor& t) {
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, t.get_device()));
  return n;
}

void check_cuda_int32(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == at::kInt, name, " must be int32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims, got ", t.dim());
  TORCH_CHECK(t.stride(-1) == 1, name, " must be contiguous in its last dim");
}

std::tuple<at::Tensor, at::Tensor> get_mla_metadata(const at::Tensor& cache_seqlens, int64_t num_q_tokens_per_head_k,
                                                    int64_t num_heads_k) {
  check_cuda_int32(cache_seqlens, "cache_seqlens", 1);
  TORCH_CHECK(cache_seqlens.is_contiguous(), "cache_seqlens must be contiguous");
  TORCH_CHECK(num_q_tokens_per_head_k > 0, "num_q_tokens_per_head_k must be positive");
  TORCH_CHECK(num_heads_k == 1, "num_heads_k must be 1 (MLA has one KV head)");
  c10::cuda::CUDAGuard guard(cache_seqlens.device());
  const int num_m_blocks = ceil_div(num_q_tokens_per_head_k, kBlockM);
  const int num_parts = std::max<int>(num_sms(cache_seqlens) / num_heads_k / num_m_blocks, 1);
  const int batch = cache_seqlens.size(0);
  auto metadata = at::empty({num_parts, kMetadataFields}, cache_seqlens.options());
  auto num_splits = at::empty({batch + 1}, cache_seqlens.options());
  run_mla_metadata(cache_seqlens.data_ptr<int>(), batch, num_parts, metadata.data_ptr<int>(),
                   num_splits.data_ptr<int>(), c10::cuda::getCurrentCUDAStream());
  return {metadata, num_splits};
}

#ifdef MLA_TIMELINE
// The stamps of the last fwd_kvcache call (timeline.h), for benchmarks/timeline_decode.py.
at::Tensor g_timeline, g_timeline_combine;

void attach_timeline(DecodeParams& p, int64_t lanes, const at::TensorOptions& options) {
  g_timeline = at::zeros({lanes, kTimelineStamps, 2}, options.dtype(at::kLong));
  g_timeline_combine =
      at::zeros({kCombineStamps + kCombineBlocksTimed * kCombineBlockStamps}, options.dtype(at::kLong));
  g_timeline_combine.narrow(0, 0, 2).fill_(INT64_MAX);  // earliest entry and wait: atomicMin
  p.timeline = g_timeline.data_ptr<int64_t>();
  p.timeline_combine = g_timeline_combine.data_ptr<int64_t>();
}

std::tuple<at::Tensor, at::Tensor> last_timeline() { return {g_timeline, g_timeline_combine}; }
#endif

// Tensor map over k_cache [num_blocks, 64, 1, 576]: boxes of 64 columns x 64 tokens
// x one page, written to shared memory with the 128-byte swizzle.
CUtensorMap make_kv_tensor_map(const at::Tensor& k_cache) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult status;
    C10_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &status));
    TORCH_CHECK(status == cudaDriverEntryPointSuccess && fn, "cuTensorMapEncodeTiled is not available");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  const int64_t elem = k_cache.element_size();
  const cuuint64_t dims[3] = {kHeadDimQK, kPageSize, static_cast<cuuint64_t>(k_cache.size(0))};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(k_cache.stride(1) * elem),
                                 static_cast<cuuint64_t>(k_cache.stride(0) * elem)};
  const cuuint32_t box[3] = {64, kBlockN, 1};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  CUtensorMap map;
  const CUresult res = encode(&map, k_cache.scalar_type() == at::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                                           : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                              3, k_cache.data_ptr(), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  TORCH_CHECK(res == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (", static_cast<int>(res),
              "): k_cache needs 16-byte aligned data and strides");
  return map;
}

std::tuple<at::Tensor, at::Tensor> fwd_kvcache(const at::Tensor& q, const at::Tensor& k_cache,
                                               const at::Tensor& block_table, const at::Tensor& cache_seqlens,
                                               int64_t head_dim_v, const at::Tensor& tile_scheduler_metadata,
                                               const at::Tensor& num_splits, double softmax_scale, bool causal,
                                               const std::optional<at::Tensor>& q_pe) {
  TORCH_CHECK(q.is_cuda() && k_cache.is_cuda(), "q and k_cache must be CUDA tensors");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf, "q must be bf16 or fp16");
  TORCH_CHECK(k_cache.scalar_type() == q.scalar_type(), "k_cache must have q's dtype");
  const int64_t q_cols = q_pe ? kHeadDimV : kHeadDimQK;
  TORCH_CHECK(q.dim() == 4 && q.size(3) == q_cols && q.stride(3) == 1,
              "q must be [b, s_q, h_q, ", q_cols, "], last dim contiguous");
  if (q_pe) {
    TORCH_CHECK(q_pe->device() == q.device() && q_pe->scalar_type() == q.scalar_type(), "q_pe must have q's device and dtype");
    TORCH_CHECK(q_pe->dim() == 4 && q_pe->size(0) == q.size(0) && q_pe->size(1) == q.size(1) &&
                    q_pe->size(2) == q.size(2) && q_pe->size(3) == kHeadDimQK - kHeadDimV && q_pe->stride(3) == 1,
                "q_pe must be [b, s_q, h_q, 64] as q, last dim contiguous");
  }
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.size(1) == kPageSize && k_cache.size(2) == 1 &&
                  k_cache.size(3) == kHeadDimQK && k_cache.stride(3) == 1,
              "k_cache must be [num_blocks, 64, 1, 576], last dim contiguous");
  TORCH_CHECK(head_dim_v == kHeadDimV, "head_dim_v must be 512");
  const int batch = q.size(0), seqlen_q = q.size(1), num_heads_q = q.size(2);
  check_cuda_int32(block_table, "block_table", 2);
  check_cuda_int32(cache_seqlens, "cache_seqlens", 1);
  check_cuda_int32(tile_scheduler_metadata, "tile_scheduler_metadata", 2);
  check_cuda_int32(num_splits, "num_splits", 1);
  TORCH_CHECK(block_table.size(0) == batch && cache_seqlens.size(0) == batch && num_splits.size(0) == batch + 1,
              "block_table, cache_seqlens and num_splits must match q's batch");
  TORCH_CHECK(tile_scheduler_metadata.size(1) == kMetadataFields && tile_scheduler_metadata.is_contiguous(),
              "tile_scheduler_metadata must be contiguous [num_parts, 8]");

  c10::cuda::CUDAGuard guard(q.device());
  auto out = at::empty({batch, seqlen_q, num_heads_q, kHeadDimV}, q.options());
  auto lse = at::empty({batch, num_heads_q, seqlen_q}, q.options().dtype(at::kFloat));
  if (batch == 0 || seqlen_q == 0 || num_heads_q == 0) return {out, lse};

  const int num_parts = tile_scheduler_metadata.size(0);
  const int q_rows = seqlen_q * num_heads_q;
  // Partials in q's dtype, their LSEs in fp32 (the epilogue in splitkv_mla.cuh says why).
  auto out_accum = at::empty({batch + num_parts, q_rows, kHeadDimV}, q.options());
  // The LSEs row-major over pieces, so that the combine reads a row's pieces in whole sectors.
  auto lse_accum = at::empty({q_rows, batch + num_parts}, q.options().dtype(at::kFloat));

  DecodeParams p{};
  p.batch = batch;
  p.seqlen_q = seqlen_q;
  p.num_heads_q = num_heads_q;
  p.q_rows = q_rows;
  p.causal = causal && seqlen_q > 1;
  p.scale_log2 = static_cast<float>(softmax_scale * M_LOG2E);
  p.q = q.data_ptr();
  p.q_batch_stride = q.stride(0);
  p.q_seq_stride = q.stride(1);
  p.q_head_stride = q.stride(2);
  const at::Tensor& rope = q_pe ? *q_pe : q;
  p.q_pe = static_cast<const char*>(rope.data_ptr()) + (q_pe ? 0 : kHeadDimV * q.element_size());
  p.q_pe_batch_stride = rope.stride(0);
  p.q_pe_seq_stride = rope.stride(1);
  p.q_pe_head_stride = rope.stride(2);
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.out_accum = out_accum.data_ptr();
  p.lse_accum = lse_accum.data_ptr<float>();
  p.splits_capacity = batch + num_parts;
  p.block_table = block_table.data_ptr<int>();
  p.block_table_stride = block_table.stride(0);
  p.max_blocks_per_seq = block_table.size(1);
  p.seqlens_k = cache_seqlens.data_ptr<int>();
  p.metadata = reinterpret_cast<const PartMetadata*>(tile_scheduler_metadata.data_ptr<int>());
  p.num_splits = num_splits.data_ptr<int>();

  const CUtensorMap tmap = make_kv_tensor_map(k_cache);
  const int num_m_blocks = ceil_div(q_rows, kBlockM);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int sms = num_sms(q);
#ifdef MLA_TIMELINE
  attach_timeline(p, int64_t(num_m_blocks) * num_parts * kNumWarpgroups, q.options());
#endif
  if (q.scalar_type() == at::kBFloat16) {
    run_splitkv_mla<cutlass::bfloat16_t>(p, tmap, num_m_blocks, num_parts, stream);
    run_combine<__nv_bfloat16>(p, num_parts, sms, stream);
  } else {
    run_splitkv_mla<cutlass::half_t>(p, tmap, num_m_blocks, num_parts, stream);
    run_combine<__half>(p, num_parts, sms, stream);
  }
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(mla_backend, CUDA, m) {
  m.impl("get_mla_metadata", &get_mla_metadata);
  m.impl("fwd_kvcache", &fwd_kvcache);
}

#ifdef MLA_TIMELINE
TORCH_LIBRARY_FRAGMENT(mla_backend, m) { m.def("last_timeline() -> (Tensor, Tensor)", &last_timeline); }
#endif

}  // namespace mla
