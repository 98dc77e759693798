"""Tile-scheduler metadata in persistent buffers, for the engine adapters (vLLM, SGLang)."""
from __future__ import annotations

import torch

from mla_backend import get_mla_metadata
from mla_backend.ops import num_sms
from mla_backend.reference import METADATA_FIELDS


class DecodeSchedule:
    """Builds `get_mla_metadata` outputs into buffers that keep their addresses across
    steps, so a decode captured in a full CUDA graph reads the current step's schedule.

    Uniform decode batches only: every request has the same number of query tokens
    (1, or the verified draft tokens of speculative decoding).
    """

    def __init__(self, num_heads_q: int, max_num_seqs: int, device: torch.device | str):
        self.num_heads_q = num_heads_q
        # num_sm_parts never exceeds the multiprocessor count.
        self.metadata_buffer = torch.zeros((num_sms(device), METADATA_FIELDS), dtype=torch.int32, device=device)
        self.num_splits_buffer = torch.zeros((max_num_seqs + 1,), dtype=torch.int32, device=device)

    def build(self, seq_lens: torch.Tensor, seqlen_q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """seq_lens: int32 [num_decodes] on the device; seqlen_q: query tokens per request."""
        num_decodes = seq_lens.shape[0]
        metadata, num_splits = get_mla_metadata(seq_lens, seqlen_q * self.num_heads_q, 1)
        parts = metadata.shape[0]
        if parts > self.metadata_buffer.shape[0] or num_decodes + 1 > self.num_splits_buffer.shape[0]:
            raise ValueError(f"decode batch of {num_decodes} requests x {parts} parts exceeds the buffers "
                             f"({self.num_splits_buffer.shape[0] - 1} requests, {self.metadata_buffer.shape[0]} parts)")
        self.metadata_buffer[:parts].copy_(metadata)
        self.num_splits_buffer[: num_decodes + 1].copy_(num_splits)
        return self.metadata_buffer[:parts], self.num_splits_buffer[: num_decodes + 1]
