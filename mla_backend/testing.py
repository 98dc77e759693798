"""Input builders and error metrics shared by the tests and the benchmarks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .reference import HEAD_DIM_QK, PAGE_SIZE


@dataclass
class DecodeInputs:
    q: torch.Tensor             # [b, s_q, h_q, 576]
    k_cache: torch.Tensor       # [num_blocks, 64, 1, 576]
    block_table: torch.Tensor   # int32 [b, max_blocks], a random permutation of the pages
    cache_seqlens: torch.Tensor  # int32 [b]


def make_decode_inputs(seqlens: Sequence[int], s_q: int, h_q: int, dtype=torch.bfloat16, device="cpu",
                       seed: int = 0, spare_blocks: int = 0, unused_entry: int = 0,
                       poison_tails: bool = False) -> DecodeInputs:
    """Random inputs with each request's pages scattered over the cache.

    unused_entry fills block-table slots past a request's length (a kernel must not read
    them); poison_tails writes NaN into the unused tokens of each request's last page,
    where a kernel must read nothing into the output either.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    b = len(seqlens)
    pages = [-(-int(s) // PAGE_SIZE) for s in seqlens]
    max_blocks = max(pages + [1])
    num_blocks = sum(pages) + spare_blocks + 1
    perm = torch.randperm(num_blocks, generator=g)
    block_table = torch.full((b, max_blocks), unused_entry, dtype=torch.int32)
    start = 0
    for i, n in enumerate(pages):
        block_table[i, :n] = perm[start:start + n].int()
        start += n
    g_dev = torch.Generator(device=device).manual_seed(seed)
    k_cache = torch.randn(num_blocks, PAGE_SIZE, 1, HEAD_DIM_QK, generator=g_dev, device=device, dtype=dtype)
    if poison_tails:
        for i, s in enumerate(seqlens):
            if s % PAGE_SIZE:
                k_cache[int(block_table[i, pages[i] - 1]), s % PAGE_SIZE:] = float("nan")
    q = torch.randn(b, s_q, h_q, HEAD_DIM_QK, generator=g_dev, device=device, dtype=dtype)
    return DecodeInputs(q, k_cache, block_table.to(device), torch.tensor(list(seqlens), dtype=torch.int32,
                                                                         device=device))


def req_to_token_pool(block_table: torch.Tensor, seq_lens: Sequence[int], pool_rows: int,
                      max_context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SGLang's req_to_token as it is filled with --page-size 64, holding the requests of
    `block_table` at pool rows 1, 3, 5, ...: (req_to_token, the requests' pool rows)."""
    req_to_token = torch.zeros(pool_rows, max_context, dtype=torch.int32, device=block_table.device)
    rows = torch.arange(1, 2 * len(seq_lens), 2, device=block_table.device)
    for i, n in enumerate(seq_lens):
        t = torch.arange(n, device=block_table.device)
        req_to_token[rows[i], :n] = (block_table[i, t // PAGE_SIZE] * PAGE_SIZE + t % PAGE_SIZE).int()
    return req_to_token, rows


def engine_query(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q's values laid out as vLLM's MLA layer hands a decode query to its backend: the latent
    columns a transposed [h_q, tokens, 512] bmm output, the rope columns a slice of the
    [tokens, h_q, 192] q projection. Returns (latent [b, s_q, h_q, 512], rope [b, s_q, h_q, 64])."""
    b, s_q, h_q, _ = q.shape
    tokens = b * s_q
    latent = torch.empty(h_q, tokens, 512, dtype=q.dtype, device=q.device).transpose(0, 1)
    projection = torch.empty(tokens, h_q, 192, dtype=q.dtype, device=q.device)
    latent.copy_(q[..., :512].reshape(tokens, h_q, 512))
    projection[..., 128:] = q[..., 512:].reshape(tokens, h_q, 64)
    return latent.view(b, s_q, h_q, 512), projection[..., 128:].view(b, s_q, h_q, 64)


def varlen_seqlens(b: int, mean: int, s_q: int, seed: int = 0) -> list[int]:
    """FlashMLA's benchmark batches: seqlen ~ N(mean, mean / 2), clipped below at s_q."""
    g = torch.Generator().manual_seed(seed)
    return [max(int(v), s_q) for v in torch.normal(float(mean), mean / 2, (b,), generator=g).tolist()]


def cal_diff(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(cosine error 1 - 2<x,y>/(|x|^2+|y|^2), relative error |x-y|/|y|) in float64.

    -inf must sit at the same places in both; it is left out of the sums.
    """
    x, y = x.double(), y.double()
    x_inf, y_inf = torch.isneginf(x), torch.isneginf(y)
    if not torch.equal(x_inf, y_inf):
        return math.inf, math.inf
    x, y = x.masked_fill(x_inf, 0.0), y.masked_fill(y_inf, 0.0)
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return math.inf, math.inf
    denom = (x * x + y * y).sum().item()
    cos_diff = 1.0 - 2.0 * (x * y).sum().item() / denom if denom > 0 else 0.0
    norm_y = y.norm().item()
    rel = (x - y).norm().item() / norm_y if norm_y > 0 else (x - y).norm().item()
    return cos_diff, rel


def sm90_skip_reason() -> str | None:
    """Why the sm_90a kernels cannot run here, or None when they can."""
    from . import ops

    if not torch.cuda.is_available():
        return "needs an sm_90 GPU: no CUDA device"
    if ops.EXTENSION_ERROR:
        return f"needs the built extension: {ops.EXTENSION_ERROR}"
    if not ops.has_sm90_kernel(torch.device("cuda")):
        return f"needs an sm_90 GPU, found compute capability {torch.cuda.get_device_capability()}"
    return None


def poison_allocator(nbytes: int, device) -> None:
    """Fills freed memory of the caching allocator with NaN, so that outputs the op
    allocates next start as NaN rather than as the last run's results."""
    torch.full((nbytes // 4 + 1,), float("nan"), dtype=torch.float32, device=device)
