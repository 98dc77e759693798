"""Thin subclasses of vLLM's MLA common classes: decode through mla_backend, prefill inherited."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vllm.config import VllmConfig
from vllm.config.cache import CacheDType
from vllm.model_executor.layers.attention.mla_attention import (
    MLACommonBackend,
    MLACommonDecodeMetadata,
    MLACommonImpl,
    MLACommonMetadata,
    MLACommonMetadataBuilder,
    QueryLenSupport,
)
from vllm.platforms.interface import DeviceCapability
from vllm.v1.attention.backend import AttentionCGSupport, AttentionLayer, AttentionType
from vllm.v1.attention.backends.utils import (
    reshape_attn_output_for_spec_decode,
    reshape_query_for_spec_decode,
)
from vllm.v1.kv_cache_interface import AttentionSpec

from mla_backend import flash_mla_with_kvcache
from mla_backend.schedule import DecodeSchedule



class MLADecodeBackend(MLACommonBackend):
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16]
    supported_kv_cache_dtypes: ClassVar[list[CacheDType]] = ["auto", "float16", "bfloat16"]

    @staticmethod
    def get_name() -> str:
        return "CUSTOM"

    @staticmethod
    def get_supported_kernel_block_sizes() -> list[int]:
        return [64]

    @classmethod
    def get_supported_head_sizes(cls) -> list[int]:
        return [576]

    @staticmethod
    def get_kv_cache_stride_order(include_num_layers_dimension: bool = False) -> tuple[int, ...]:
        # The kernel takes any page stride, so layers may share one allocation.
        return (1, 0, 2, 3) if include_num_layers_dimension else (0, 1, 2)

    @staticmethod
    def get_builder_cls() -> type[MLADecodeMetadataBuilder]:
        return MLADecodeMetadataBuilder

    @staticmethod
    def get_impl_cls() -> type[MLADecodeImpl]:
        return MLADecodeImpl

    @classmethod
    def supports_compute_capability(cls, capability: DeviceCapability | None) -> bool:
        # sm_90 runs the kernel; the CPU platform (no capability) runs the reference.
        return capability is None or capability.major == 9

    @classmethod
    def supports_combination(cls, head_size, dtype, kv_cache_dtype, block_size, use_mla, has_sink, use_sparse,
                             use_mm_prefix, device_capability) -> str | None:
        if use_sparse:
            return "sparse MLA is not supported"
        if block_size is not None and block_size % 64 != 0:
            return f"block size {block_size} is not a multiple of the kernel's 64-token pages"
        return None


@dataclass
class MLADecodeMetadata(MLACommonDecodeMetadata):
    tile_scheduler_metadata: torch.Tensor
    num_splits: torch.Tensor


@dataclass
class MLABackendMetadata(MLACommonMetadata[MLADecodeMetadata]):
    pass


class MLADecodeMetadataBuilder(MLACommonMetadataBuilder[MLABackendMetadata]):
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.UNIFORM_BATCH
    query_len_support: ClassVar[QueryLenSupport] = QueryLenSupport.UNIFORM

    def __init__(self, kv_cache_spec: AttentionSpec, layer_names: list[str], vllm_config: VllmConfig,
                 device: torch.device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device, MLABackendMetadata)
        if self.dcp_world_size > 1:
            raise NotImplementedError("the CUSTOM MLA backend does not support decode context parallelism")
        self.schedule = DecodeSchedule(self.num_heads, vllm_config.scheduler_config.max_num_seqs, device)

    def _build_decode(self, block_table_tensor: torch.Tensor, seq_lens_device: torch.Tensor, max_seq_len: int,
                      query_start_loc_cpu: torch.Tensor, query_start_loc_device: torch.Tensor,
                      num_decode_tokens: int, dcp_tot_seq_lens_device: torch.Tensor | None) -> MLADecodeMetadata:
        query_lens = query_start_loc_cpu[1:] - query_start_loc_cpu[:-1]  # host tensor: no sync
        seqlen_q = int(query_lens.max()) if query_lens.numel() else 1
        tile_scheduler_metadata, num_splits = self.schedule.build(seq_lens_device, seqlen_q)
        return MLADecodeMetadata(block_table=block_table_tensor, seq_lens=seq_lens_device,
                                 dcp_tot_seq_lens=dcp_tot_seq_lens_device,
                                 tile_scheduler_metadata=tile_scheduler_metadata, num_splits=num_splits)


class MLADecodeImpl(MLACommonImpl[MLABackendMetadata]):
    can_return_lse_for_decode: bool = True

    def __init__(self, num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window, kv_cache_dtype,
                 logits_soft_cap, attn_type, kv_sharing_target_layer_name, **mla_args) -> None:
        super().__init__(num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window, kv_cache_dtype,
                         logits_soft_cap, attn_type, kv_sharing_target_layer_name, **mla_args)
        if alibi_slopes is not None or sliding_window is not None or logits_soft_cap:
            raise NotImplementedError("the CUSTOM MLA backend supports no alibi, sliding window or soft cap")
        if attn_type != AttentionType.DECODER:
            raise NotImplementedError("the CUSTOM MLA backend supports decoder self-attention only")

    def forward_mqa(self, q: torch.Tensor | tuple[torch.Tensor, torch.Tensor], kv_c_and_k_pe_cache: torch.Tensor,
                    attn_metadata: MLABackendMetadata, layer: AttentionLayer) -> tuple[torch.Tensor, torch.Tensor]:
        decode = attn_metadata.decode
        assert decode is not None
        # The layer hands q over as (latent, rope) columns: the kernel reads both where they lie,
        # which saves the copy that concatenating them would make every layer.
        q, q_pe = q if isinstance(q, tuple) else (q, None)
        q = reshape_query_for_spec_decode(q, attn_metadata.num_decodes)
        if q_pe is not None:
            q_pe = reshape_query_for_spec_decode(q_pe, attn_metadata.num_decodes)
        out, lse = flash_mla_with_kvcache(q, kv_c_and_k_pe_cache.unsqueeze(-2), decode.block_table, decode.seq_lens,
                                          self.kv_lora_rank, decode.tile_scheduler_metadata, decode.num_splits,
                                          softmax_scale=self.scale, causal=True, q_pe=q_pe, check_seqlens=False)
        return reshape_attn_output_for_spec_decode(out), lse
