"""The two custom ops, FlashMLA's original Python API on top of them, and argument checks.

`torch.ops.mla_backend.get_mla_metadata` and `torch.ops.mla_backend.fwd_kvcache`
have a CUDA implementation (kernels/, sm_90a), a CPU implementation (the float32
reference) and fake implementations, so they trace under torch.compile and
capture in CUDA graphs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import reference
from .reference import HEAD_DIM_QK, HEAD_DIM_V, METADATA_FIELDS, PAGE_SIZE

_lib = torch.library.Library("mla_backend", "DEF")
_lib.define("get_mla_metadata(Tensor cache_seqlens, int num_q_tokens_per_head_k, int num_heads_k) "
            "-> (Tensor, Tensor)")
_lib.define("fwd_kvcache(Tensor q, Tensor k_cache, Tensor block_table, Tensor cache_seqlens, int head_dim_v, "
            "Tensor tile_scheduler_metadata, Tensor num_splits, float softmax_scale, bool causal, "
            "Tensor? q_pe=None) -> (Tensor, Tensor)")


def _load_extension() -> str | None:
    """Loads mla_backend._C; returns why not, or None."""
    candidates = sorted(Path(__file__).parent.glob("_C*.so"))
    if not candidates:
        return "mla_backend._C is not built"
    try:
        torch.ops.load_library(str(candidates[0]))
    except OSError as e:
        return f"mla_backend._C failed to load: {e}"
    return None


EXTENSION_ERROR = _load_extension()


def has_sm90_kernel(device: torch.device) -> bool:
    """Whether the CUDA kernels serve tensors on `device` (an sm_90 GPU and a loaded extension)."""
    return (EXTENSION_ERROR is None and device.type == "cuda"
            and torch.cuda.get_device_capability(device) == (9, 0))


@torch.library.impl("mla_backend::get_mla_metadata", "CPU")
def _get_mla_metadata_cpu(cache_seqlens, num_q_tokens_per_head_k, num_heads_k):
    return reference.get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k)


@torch.library.impl("mla_backend::fwd_kvcache", "CPU")
def _fwd_kvcache_cpu(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits,
                     softmax_scale, causal, q_pe=None):
    return reference.mla_decode(_whole_q(q, q_pe), k_cache, block_table, cache_seqlens, head_dim_v, softmax_scale,
                                causal)


def _whole_q(q: torch.Tensor, q_pe: torch.Tensor | None) -> torch.Tensor:
    """q with its rope columns, for the reference, which reads q whole."""
    return q if q_pe is None else torch.cat((q, q_pe), dim=-1)


def num_sms(device: torch.device | str) -> int:
    """Multiprocessors the scheduler splits work over (a nominal H100 off the GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return reference.DEFAULT_NUM_SMS


@torch.library.register_fake("mla_backend::get_mla_metadata")
def _get_mla_metadata_fake(cache_seqlens, num_q_tokens_per_head_k, num_heads_k):
    parts = reference.num_sm_parts(num_sms(cache_seqlens.device), num_q_tokens_per_head_k, num_heads_k)
    return (cache_seqlens.new_empty((parts, METADATA_FIELDS)),
            cache_seqlens.new_empty((cache_seqlens.shape[0] + 1,)))


@torch.library.register_fake("mla_backend::fwd_kvcache")
def _fwd_kvcache_fake(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits,
                      softmax_scale, causal, q_pe=None):
    b, s_q, h_q, _ = q.shape
    return q.new_empty((b, s_q, h_q, head_dim_v)), q.new_empty((b, h_q, s_q), dtype=torch.float32)


def _expect(ok: bool, message) -> None:
    """Raises ValueError(message()) unless ok; the message is built only on failure (hot path)."""
    if not ok:
        raise ValueError(message())


def _check_int32(t, name: str, shape: tuple, device: torch.device) -> None:
    _expect(isinstance(t, torch.Tensor), lambda: f"{name} must be a torch.Tensor, got {type(t).__name__}")
    _expect(t.dtype == torch.int32, lambda: f"{name} must be int32, got {t.dtype}")
    _expect(t.device == device, lambda: f"{name} must be on {device} (q's device), got {t.device}")
    _expect(t.dim() == len(shape) and all(e is None or e == s for e, s in zip(shape, t.shape)),
            lambda: f"{name} must have shape {_shape_str(shape)}, got {list(t.shape)}")
    _expect(t.dim() == 0 or t.stride(-1) == 1,
            lambda: f"{name} must be contiguous in its last dim, got strides {t.stride()}")


def _shape_str(shape: tuple) -> str:
    return "[" + ", ".join("*" if e is None else str(e) for e in shape) + "]"


def _is_tracing(t: torch.Tensor) -> bool:
    """Whether `t` is a fake tensor of torch.compile or the current CUDA stream is being captured."""
    return torch.compiler.is_compiling() or (t.is_cuda and torch.cuda.is_current_stream_capturing())


def _aligned16(t: torch.Tensor) -> bool:
    return _is_tracing(t) or t.data_ptr() % 16 == 0  # fake tensors under tracing have no data


def _row_strides_ok(strides: tuple) -> bool:
    """q's and q_pe's [b, s_q, h_q, *] strides allow the kernel's 16-byte loads (8 bf16/fp16 elements)."""
    return strides[0] % 8 == 0 and strides[1] % 8 == 0 and strides[2] % 8 == 0


def _expect_16byte_loads(name: str, t: torch.Tensor) -> None:
    """The kernel reads q's [b, s_q, h_q, *] rows (q and q_pe) in 16-byte pieces."""
    _expect(t.stride(-1) == 1, lambda: f"{name} must be contiguous in its last dim, got strides {t.stride()}")
    _expect(_row_strides_ok(t.stride()) and _aligned16(t),
            lambda: f"{name}'s batch, token and head strides must be multiples of 8 elements and its data "
                    f"16-byte aligned (16-byte loads), got strides {t.stride()}")


def _int32_ok(t, dims: int, device: torch.device) -> bool:
    """_check_int32's conditions but the shape's sizes, in one expression."""
    return (isinstance(t, torch.Tensor) and t.dtype == torch.int32 and t.device == device and t.dim() == dims
            and t.stride(-1) == 1)


def _decode_inputs_ok(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                      num_splits, q_pe=None) -> bool:
    """All of check_decode_inputs' conditions in one expression: the hot path, where they hold."""
    if not (isinstance(q, torch.Tensor) and isinstance(k_cache, torch.Tensor) and q.dim() == 4
            and k_cache.dim() == 4 and head_dim_v == HEAD_DIM_V):
        return False
    b, s_q, h_q, d = q.shape
    qs, ks = q.stride(), k_cache.stride()
    device = q.device
    if q_pe is not None and not (isinstance(q_pe, torch.Tensor) and q_pe.dtype == q.dtype and q_pe.device == device
                                 and tuple(q_pe.shape) == (b, s_q, h_q, HEAD_DIM_QK - HEAD_DIM_V)
                                 and q_pe.stride(3) == 1 and _row_strides_ok(q_pe.stride()) and _aligned16(q_pe)):
        return False
    q_cols = HEAD_DIM_QK if q_pe is None else HEAD_DIM_V
    if not (q.dtype in (torch.bfloat16, torch.float16) and d == q_cols and s_q >= 1 and h_q >= 1
            and qs[3] == 1 and _row_strides_ok(qs)
            and k_cache.dtype == q.dtype and k_cache.device == device
            and tuple(k_cache.shape[1:]) == (PAGE_SIZE, 1, HEAD_DIM_QK)
            and ks[3] == 1 and ks[0] % 8 == 0 and ks[1] % 8 == 0):
        return False
    if not (_int32_ok(block_table, 2, device) and block_table.shape[0] == b
            and _int32_ok(cache_seqlens, 1, device) and cache_seqlens.shape[0] == b and cache_seqlens.is_contiguous()
            and _int32_ok(tile_scheduler_metadata, 2, device) and tile_scheduler_metadata.shape[1] == METADATA_FIELDS
            and tile_scheduler_metadata.is_contiguous()
            and _int32_ok(num_splits, 1, device) and num_splits.shape[0] == b + 1):
        return False
    return _is_tracing(q) or (q.data_ptr() % 16 == 0 and k_cache.data_ptr() % 16 == 0)


def check_decode_inputs(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits,
                        check_seqlens: bool, q_pe=None) -> None:
    """Raises ValueError naming the first argument that is not what the kernel takes."""
    if not _decode_inputs_ok(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                             num_splits, q_pe):
        _raise_first_input_error(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                                 num_splits, q_pe)
    if check_seqlens and not _is_tracing(q) and q.shape[0] > 0:
        lo, hi = (int(v) for v in torch.aminmax(cache_seqlens))
        _expect(lo >= 0, lambda: f"cache_seqlens must be >= 0, got {lo}")
        capacity = block_table.shape[1] * PAGE_SIZE
        _expect(hi <= capacity,
                lambda: f"block_table has {block_table.shape[1]} blocks per request ({capacity} tokens), "
                        f"too few for cache_seqlens up to {hi}")


def _raise_first_input_error(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                             num_splits, q_pe=None) -> None:
    """The checks of _decode_inputs_ok one at a time, so that the error names what failed."""
    q_cols = HEAD_DIM_QK if q_pe is None else HEAD_DIM_V
    _expect(isinstance(q, torch.Tensor), lambda: f"q must be a torch.Tensor, got {type(q).__name__}")
    _expect(q.dtype in (torch.bfloat16, torch.float16), lambda: f"q must be bfloat16 or float16, got {q.dtype}")
    _expect(q.dim() == 4, lambda: f"q must be [batch, seqlen_q, num_heads_q, {q_cols}], got shape {list(q.shape)}")
    b, s_q, h_q, d = q.shape
    _expect(d == q_cols, lambda: f"q's head dim must be {HEAD_DIM_QK} (512 latent + 64 rope), got {d}" if q_pe is None
            else f"q's head dim must be {HEAD_DIM_V} (the latent columns; q_pe holds the rope ones), got {d}")
    _expect(s_q >= 1 and h_q >= 1, lambda: f"q must have seqlen_q >= 1 and num_heads_q >= 1, got shape {list(q.shape)}")
    _expect_16byte_loads("q", q)
    if q_pe is not None:
        rope = HEAD_DIM_QK - HEAD_DIM_V
        _expect(isinstance(q_pe, torch.Tensor), lambda: f"q_pe must be a torch.Tensor, got {type(q_pe).__name__}")
        _expect(q_pe.dtype == q.dtype, lambda: f"q_pe must have q's dtype {q.dtype}, got {q_pe.dtype}")
        _expect(q_pe.device == q.device, lambda: f"q_pe must be on {q.device} (q's device), got {q_pe.device}")
        _expect(tuple(q_pe.shape) == (b, s_q, h_q, rope),
                lambda: f"q_pe must have shape {[b, s_q, h_q, rope]} (q's first three dims), got {list(q_pe.shape)}")
        _expect_16byte_loads("q_pe", q_pe)
    _expect(head_dim_v == HEAD_DIM_V, lambda: f"head_dim_v must be {HEAD_DIM_V}, got {head_dim_v}")

    _expect(isinstance(k_cache, torch.Tensor), lambda: f"k_cache must be a torch.Tensor, got {type(k_cache).__name__}")
    _expect(k_cache.dtype == q.dtype, lambda: f"k_cache must have q's dtype {q.dtype}, got {k_cache.dtype}")
    _expect(k_cache.device == q.device, lambda: f"k_cache must be on {q.device} (q's device), got {k_cache.device}")
    _expect(k_cache.dim() == 4,
            lambda: f"k_cache must be [num_blocks, {PAGE_SIZE}, 1, {HEAD_DIM_QK}], got shape {list(k_cache.shape)}")
    _expect(k_cache.shape[1] == PAGE_SIZE,
            lambda: f"k_cache's page size (dim 1) must be {PAGE_SIZE}, got {k_cache.shape[1]}")
    _expect(k_cache.shape[2] == 1, lambda: f"k_cache must have 1 KV head (dim 2), got {k_cache.shape[2]}")
    _expect(k_cache.shape[3] == HEAD_DIM_QK,
            lambda: f"k_cache's head dim must be {HEAD_DIM_QK}, got {k_cache.shape[3]}")
    _expect(k_cache.stride(3) == 1,
            lambda: f"k_cache must be contiguous in its last dim, got strides {k_cache.stride()}")
    _expect(k_cache.stride(0) % 8 == 0 and k_cache.stride(1) % 8 == 0 and _aligned16(k_cache),
            lambda: f"k_cache's page and token strides must be multiples of 8 elements and its data "
                    f"16-byte aligned (TMA), got strides {k_cache.stride()}")

    _check_int32(block_table, "block_table", (b, None), q.device)
    _check_int32(cache_seqlens, "cache_seqlens", (b,), q.device)
    _expect(cache_seqlens.is_contiguous(), lambda: "cache_seqlens must be contiguous")
    _check_int32(tile_scheduler_metadata, "tile_scheduler_metadata", (None, METADATA_FIELDS), q.device)
    _expect(tile_scheduler_metadata.is_contiguous(), lambda: "tile_scheduler_metadata must be contiguous")
    _check_int32(num_splits, "num_splits", (b + 1,), q.device)


def get_mla_metadata(cache_seqlens: torch.Tensor, num_q_tokens_per_head_k: int,
                     num_heads_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile-scheduler metadata for a batch: (int32 [num_sm_parts, 8], int32 [batch + 1] cumulative splits).

    On an sm_90 GPU it is computed by a kernel with no host synchronisation, so it can be
    captured in a CUDA graph. num_q_tokens_per_head_k is seqlen_q * num_heads_q // num_heads_k.
    """
    _expect(isinstance(cache_seqlens, torch.Tensor), lambda: "cache_seqlens must be a torch.Tensor")
    _expect(cache_seqlens.dtype == torch.int32 and cache_seqlens.dim() == 1,
            lambda: f"cache_seqlens must be a 1-D int32 tensor, got {cache_seqlens.dtype} "
                    f"of shape {list(cache_seqlens.shape)}")
    _expect(cache_seqlens.is_contiguous(), lambda: "cache_seqlens must be contiguous")
    _expect(num_heads_k == 1, lambda: f"num_heads_k must be 1 (MLA has one KV head), got {num_heads_k}")
    _expect(num_q_tokens_per_head_k >= 1,
            lambda: f"num_q_tokens_per_head_k must be >= 1, got {num_q_tokens_per_head_k}")
    if cache_seqlens.is_cuda and not has_sm90_kernel(cache_seqlens.device):
        return reference.get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k,
                                          num_sms(cache_seqlens.device))
    return torch.ops.mla_backend.get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k)


def flash_mla_with_kvcache(q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor,
                           cache_seqlens: torch.Tensor, head_dim_v: int, tile_scheduler_metadata: torch.Tensor,
                           num_splits: torch.Tensor, softmax_scale: float | None = None, causal: bool = False,
                           *, q_pe: torch.Tensor | None = None,
                           check_seqlens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MLA decode over a paged KV cache, FlashMLA's original interface.

    q [b, s_q, h_q, 576]; k_cache [num_blocks, 64, 1, 576] (V is its first 512 columns);
    block_table int32 [b, max_blocks]; cache_seqlens int32 [b]. Returns out [b, s_q, h_q, 512]
    in q's dtype and lse float32 [b, h_q, s_q]. With causal, query token i of s_q sees the
    first seqlen - s_q + 1 + i keys.

    q_pe [b, s_q, h_q, 64], if given, holds q's rope columns, and q then only its 512 latent
    ones: the kernel reads each where it lies, so an engine that computes the two apart (vLLM's
    MLA layer does) need not concatenate them first. softmax_scale defaults to 576 ** -0.5 either way.

    check_seqlens reads cache_seqlens on the host to check them against the block table;
    it is skipped while capturing a CUDA graph or compiling. Pass False where a host
    synchronisation per call costs too much.
    """
    check_decode_inputs(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits,
                        check_seqlens, q_pe)
    if softmax_scale is None:
        softmax_scale = HEAD_DIM_QK ** -0.5
    if q.is_cuda and not has_sm90_kernel(q.device):
        return reference.mla_decode(_whole_q(q, q_pe), k_cache, block_table, cache_seqlens, head_dim_v, softmax_scale,
                                    causal)
    return torch.ops.mla_backend.fwd_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v,
                                             tile_scheduler_metadata, num_splits, softmax_scale, causal, q_pe)
