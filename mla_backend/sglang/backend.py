"""SGLang attention backend: decode and target-verify on mla_backend's kernel.

It extends SGLang's FlashInfer-MLA backend, so prefill (EXTEND) stays FlashInfer's. Decode
and target verify (s_q = the draft tokens, causal, chain drafts) read the 64-token page
table built from req_to_token and the tile-scheduler metadata, both in buffers that keep
their addresses, prepared outside the captured graph.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from sglang.srt.layers.attention.flashinfer_mla_backend import FlashInferMLAAttnBackend
from sglang.srt.layers.attention.verify_mask import VerifyMask, maybe_create_verify_mask
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.runtime_context import get_parallel, get_spec

from mla_backend import flash_mla_with_kvcache, get_mla_metadata
from mla_backend.reference import HEAD_DIM_QK, PAGE_SIZE
from mla_backend.schedule import DecodeSchedule

from .page_table import check_page_size, page_table_from_req_to_token


class DecodeMetadata(NamedTuple):
    page_table: torch.Tensor
    tile_scheduler_metadata: torch.Tensor
    num_splits: torch.Tensor


class MLADecodeAttnBackend(FlashInferMLAAttnBackend):
    needs_cpu_seq_lens: bool = False  # decode metadata is built on the device
    supports_ragged_verify_graph: bool = False  # verify batches are uniform: num_draft_tokens each

    def __init__(self, model_runner, skip_prefill: bool = False, kv_indptr_buf=None, q_indptr_decode_buf=None):
        check_page_size(model_runner.page_size)
        super().__init__(model_runner, skip_prefill, kv_indptr_buf, q_indptr_decode_buf)
        self.num_q_heads = model_runner.model_config.num_attention_heads // get_parallel().attn_tp_size
        self.kv_lora_rank = model_runner.model_config.kv_lora_rank
        self.req_to_token = model_runner.req_to_token_pool.req_to_token
        self.num_draft_tokens = get_spec().speculative_num_draft_tokens or 0
        self.max_pages = -(-(self.max_context_len + self.num_draft_tokens) // PAGE_SIZE)
        self.is_draft_runner = model_runner.is_draft_worker
        self.graph_page_table = None  # persistent buffers, allocated for the captured batch sizes
        self.graph_schedule = None
        self.decode_metadata = None
        self._verify_mask = None

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int, kv_indices_buf=None) -> None:
        # kv_indices_buf: FlashInfer's index scratch that SGLang's callers may hand over; the
        # kernel reads its own page table instead.
        self.graph_page_table = torch.zeros((max_bs, self.max_pages), dtype=torch.int32, device=self.device)
        self.graph_schedule = DecodeSchedule(self.num_q_heads, max_bs, self.device)
        # SGLang's verify worker fetches the draft-tree scratch from the target backend; the
        # kernel's causal mask covers chain drafts, so the mask is written, never read.
        self._verify_mask = maybe_create_verify_mask(
            is_draft_runner=self.is_draft_runner, skip_prefill=self.skip_prefill, max_bs=max_bs,
            max_context_len=self.max_context_len, num_draft_tokens=self.num_draft_tokens, device=self.device,
            is_read=False)

    @property
    def verify_mask(self) -> VerifyMask | None:
        return self._verify_mask

    def get_cuda_graph_seq_len_fill_value(self) -> int:
        return 1

    def _kv_lens(self, forward_batch: ForwardBatch) -> tuple[torch.Tensor, int]:
        """KV lengths (int32) and query tokens per request of a decode or target-verify batch."""
        seq_lens = forward_batch.seq_lens[: forward_batch.batch_size].to(torch.int32)
        if forward_batch.forward_mode.is_target_verify():
            return seq_lens + self.num_draft_tokens, self.num_draft_tokens
        return seq_lens, 1

    def _prepare_decode(self, forward_batch: ForwardBatch) -> None:
        seq_lens, seqlen_q = self._kv_lens(forward_batch)
        bs = seq_lens.shape[0]
        pool_rows = forward_batch.req_pool_indices[:bs]
        if self.graph_page_table is not None and bs <= self.graph_page_table.shape[0]:
            page_table = page_table_from_req_to_token(self.req_to_token, pool_rows, seq_lens, self.max_pages,
                                                      out=self.graph_page_table)
            self.decode_metadata = DecodeMetadata(page_table, *self.graph_schedule.build(seq_lens, seqlen_q))
        else:  # an eager batch larger than any captured one: fresh tensors, the graph buffers stay put
            page_table = page_table_from_req_to_token(self.req_to_token, pool_rows, seq_lens, self.max_pages)
            self.decode_metadata = DecodeMetadata(page_table,
                                                  *get_mla_metadata(seq_lens, seqlen_q * self.num_q_heads, 1))

    def _runs_decode_kernel(self, forward_batch: ForwardBatch) -> bool:
        mode = forward_batch.forward_mode
        return mode.is_decode_or_idle() or mode.is_target_verify()

    def init_forward_metadata(self, forward_batch: ForwardBatch):
        if self._runs_decode_kernel(forward_batch):
            self._prepare_decode(forward_batch)
        else:
            super().init_forward_metadata(forward_batch)

    def init_forward_metadata_out_graph(self, forward_batch: ForwardBatch, in_capture: bool = False):
        if self._runs_decode_kernel(forward_batch):
            self._prepare_decode(forward_batch)
        else:
            super().init_forward_metadata_out_graph(forward_batch, in_capture=in_capture)

    def _decode(self, q, k, v, layer, forward_batch: ForwardBatch, save_kv_cache: bool):
        if k is not None and save_kv_cache:
            self.token_to_kv_pool.set_kv_buffer(layer, forward_batch.out_cache_loc, k, v)
        seq_lens, seqlen_q = self._kv_lens(forward_batch)  # inside the graph: from its static seq_lens
        meta = self.decode_metadata
        k_cache = self.token_to_kv_pool.get_key_buffer(layer.layer_id).view(-1, PAGE_SIZE, 1, HEAD_DIM_QK)
        q = q.view(seq_lens.shape[0], seqlen_q, layer.tp_q_head_num, layer.head_dim)
        out, _ = flash_mla_with_kvcache(q, k_cache, meta.page_table, seq_lens, self.kv_lora_rank,
                                        meta.tile_scheduler_metadata, meta.num_splits, softmax_scale=layer.scaling,
                                        causal=True, check_seqlens=False)
        return out.view(-1, layer.tp_q_head_num * layer.v_head_dim)

    def forward_decode(self, q, k, v, layer, forward_batch: ForwardBatch, save_kv_cache: bool = True):
        return self._decode(q, k, v, layer, forward_batch, save_kv_cache)

    def forward_extend(self, q, k, v, layer, forward_batch: ForwardBatch, save_kv_cache: bool = True):
        if forward_batch.forward_mode.is_target_verify():
            return self._decode(q, k, v, layer, forward_batch, save_kv_cache)
        return super().forward_extend(q, k, v, layer, forward_batch, save_kv_cache)
