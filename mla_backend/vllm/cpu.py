"""CPU serving: MLA routed to the CUSTOM backend (reference decode), with a torch prefill.

vLLM 0.26.0's CPU platform refuses MLA, its MLA prefill selector falls back to
FlashAttention, which has no CPU build, its CPU linear layers drop their weights
after packing them, before MLA absorbs kv_b_proj, and its AVX2 kernels have no MLA
cache write. `enable_mla_on_cpu` mends these four.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from vllm.logger import init_logger
from vllm.v1.attention.backends.mla.prefill.base import MLAPrefillBackend

from mla_backend.reference import softmax_with_lse

logger = init_logger("vllm.plugins.mla_backend")  # under "vllm", whose handlers print it


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, scale: float, causal: bool,
                     out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed-sequence attention in float32: q [T, H, D], k [S, H, D], v [S, H, Dv].

    Returns out [T, H, Dv] and lse [H, T] (FlashAttention's varlen layout). A causal
    query sees the keys up to its own position, aligned at the end of the keys.
    """
    if out is None:
        out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
    lse = torch.full((q.shape[1], q.shape[0]), -math.inf, dtype=torch.float32, device=q.device)
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for q0, q1, k0, k1 in zip(bounds_q[:-1], bounds_q[1:], bounds_k[:-1], bounds_k[1:]):
        if q1 == q0:
            continue
        scores = torch.einsum("qhd,khd->hqk", q[q0:q1].float(), k[k0:k1].float()) * scale
        probs, lse[:, q0:q1] = softmax_with_lse(scores, causal)
        out[q0:q1] = torch.einsum("hqk,khd->qhd", probs, v[k0:k1].float()).to(out.dtype)
    return out, lse


class TorchMLAPrefill(MLAPrefillBackend):
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16, torch.float32]

    @staticmethod
    def get_name() -> str:
        return "TORCH"

    def run_prefill_new_tokens(self, q, k, v, return_softmax_lse, out=None, output_scale=None):
        if output_scale is not None:
            raise NotImplementedError("the torch MLA prefill does not quantize its output")
        meta = self._prefill_metadata
        result, lse = varlen_attention(q, k, v, meta.query_start_loc, meta.query_start_loc, self.scale, True, out)
        return (result, lse) if return_softmax_lse else result

    def run_prefill_context_chunk(self, chunk_idx, q, k, v):
        meta = self._prefill_metadata
        return varlen_attention(q, k, v, meta.query_start_loc, meta.chunked_context.cu_seq_lens[chunk_idx],
                                self.scale, False)


def write_mla_cache(kv_c_normed: torch.Tensor, k_pe: torch.Tensor, kv_cache: torch.Tensor,
                    slot_mapping: torch.Tensor) -> None:
    """concat_and_cache_mla in torch: row slot of the [num_blocks * block_size, 576] cache
    gets [kv_c | k_pe] of token i for each slot_mapping[i] >= 0."""
    slots = slot_mapping.flatten()
    rows = torch.cat([kv_c_normed[: slots.numel()], k_pe[: slots.numel()].flatten(1)], dim=-1)
    keep = slots >= 0
    kv_cache.view(-1, kv_cache.shape[-1])[slots[keep]] = rows[keep].to(kv_cache.dtype)


def enable_mla_on_cpu() -> None:
    import vllm.model_executor.layers.utils as layer_utils
    from vllm.platforms.cpu import CpuPlatform
    from vllm.v1.attention.backends.mla.prefill.registry import (
        MLAPrefillBackendEnum,
        register_mla_prefill_backend,
    )

    from . import BACKEND_CLASS_PATH
    from .backend import MLADecodeImpl

    refuse_mla = CpuPlatform.get_attn_backend_cls.__func__

    def get_attn_backend_cls(cls, selected_backend, attn_selector_config, num_heads=None):
        if attn_selector_config.use_mla and not attn_selector_config.use_sparse:
            logger.info_once("MLA on CPU: %s decode (float32 reference), torch prefill", BACKEND_CLASS_PATH)
            return BACKEND_CLASS_PATH
        return refuse_mla(cls, selected_backend, attn_selector_config, num_heads)

    CpuPlatform.get_attn_backend_cls = classmethod(get_attn_backend_cls)
    # On CPU the MLA prefill selector takes FLASH_ATTN before any user choice.
    register_mla_prefill_backend(MLAPrefillBackendEnum.FLASH_ATTN, f"{__name__}.TorchMLAPrefill")

    pack_linear = layer_utils.dispatch_cpu_unquantized_gemm

    def pack_linear_keeping_weight(layer, remove_weight):
        pack_linear(layer, remove_weight=False)

    layer_utils.dispatch_cpu_unquantized_gemm = pack_linear_keeping_weight

    def do_kv_cache_update(self, kv_c_normed, k_pe, kv_cache, slot_mapping, kv_cache_dtype, k_scale):
        if kv_cache.numel():
            write_mla_cache(kv_c_normed, k_pe, kv_cache, slot_mapping)

    MLADecodeImpl.do_kv_cache_update = do_kv_cache_update
