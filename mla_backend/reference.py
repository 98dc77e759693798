"""Float32 reference of MLA decode and a Python model of the tile scheduler.

Both are the CPU path of the package (and the path on GPUs without an sm_90a
kernel) and the oracle of the tests. `schedule_parts` is the specification that
kernels/scheduler.cu implements.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

PAGE_SIZE = 64
HEAD_DIM_QK = 576
HEAD_DIM_V = 512
BLOCK_M = 64
FIXED_COST_PAIRS = 3
METADATA_FIELDS = 8
DEFAULT_NUM_SMS = 132  # an H100 SXM; used for metadata computed off the GPU


def num_sm_parts(num_sms: int, num_q_tokens_per_head_k: int, num_heads_k: int) -> int:
    """How many parts the KV work is cut into: one CTA per SM per 64-row M tile."""
    num_m_blocks = -(-num_q_tokens_per_head_k // BLOCK_M)
    return max(num_sms // num_heads_k // num_m_blocks, 1)


def pairs_left(pages: int, blk: int) -> int:
    """Page pairs from page `blk` (even) to the end of a request of `pages` pages."""
    return (pages - blk + 1) // 2


def schedule_parts(seqlens: Sequence[int], num_parts: int, whole_requests: bool = True,
                   fixed_cost_half_pairs: int = 2 * FIXED_COST_PAIRS,
                   slack_half_pairs: int | None = None) -> tuple[list[list[int]], list[int]]:
    """Pours the pages of the requests, in order and in pairs, into `num_parts` parts.

    Work is counted in half page pairs (the main loop's step is a pair; a lone last page costs
    a pair). A request costs its pairs plus `fixed_cost_half_pairs`. Each part gets a budget
    of the mean cost, rounded up to a whole pair, plus `slack_half_pairs` (by default the fixed
    cost); a request that does not fit is split after a whole number of pairs, and the last part
    takes whatever is left.
    Where every request fits one budget and there are no more requests than parts, each
    request gets a part of its own instead: no part costs more, and no request is split
    (`whole_requests=False` pours regardless, for A/B timing).

    Returns (metadata rows of 8 ints, cumulative split counts of len(seqlens) + 1).
    Row: [begin_req, begin_block, end_req (inclusive), end_block (exclusive),
    begin_split, 0, 0, 0]; an empty part has begin_req == batch.
    """
    fixed = fixed_cost_half_pairs
    slack = fixed if slack_half_pairs is None else slack_half_pairs
    batch = len(seqlens)
    pages = [max(int(s), 0) // PAGE_SIZE + (max(int(s), 0) % PAGE_SIZE > 0) for s in seqlens]
    costs = [2 * pairs_left(p, 0) + fixed for p in pages]
    payload = 2 * -(-sum(costs) // (2 * num_parts)) + slack

    def empty_part():
        return [batch, 0, batch - 1, 0, 0, 0, 0, 0]

    if whole_requests and batch <= num_parts and max(costs, default=0) <= payload:
        rows = [[req, 0, req, pages[req], 0, 0, 0, 0] for req in range(batch)]
        rows += [empty_part() for _ in range(batch, num_parts)]
        return rows, list(range(batch + 1))
    counts = [0] * batch
    rows = []
    req = blk = pieces_done = 0
    for part in range(num_parts):
        if req >= batch:
            rows.append(empty_part())
            continue
        row = [req, blk, req, blk, pieces_done, 0, 0, 0]
        budget = payload
        while req < batch:
            remaining = 2 * pairs_left(pages[req], blk)
            if part == num_parts - 1 or budget >= remaining + fixed:
                budget -= remaining + fixed
                row[2], row[3] = req, pages[req]
                counts[req] = pieces_done + 1
                req, blk, pieces_done = req + 1, 0, 0
            else:
                take = (budget - fixed) // 2
                if take > 0:
                    row[2], row[3] = req, blk + 2 * take
                    blk += 2 * take
                    pieces_done += 1
                break
        rows.append(row)
    num_splits = [0]
    for c in counts:
        num_splits.append(num_splits[-1] + c)
    return rows, num_splits


def get_mla_metadata(cache_seqlens: torch.Tensor, num_q_tokens_per_head_k: int, num_heads_k: int,
                     num_sms: int = DEFAULT_NUM_SMS) -> tuple[torch.Tensor, torch.Tensor]:
    """The scheduler model as tensors on cache_seqlens' device (reads the seqlens on the host)."""
    parts = num_sm_parts(num_sms, num_q_tokens_per_head_k, num_heads_k)
    rows, num_splits = schedule_parts(cache_seqlens.tolist(), parts)
    dev = cache_seqlens.device
    return (torch.tensor(rows, dtype=torch.int32, device=dev).view(parts, METADATA_FIELDS),
            torch.tensor(num_splits, dtype=torch.int32, device=dev))


def softmax_with_lse(scores: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last dim of float32 scores [..., q, k] and its natural-log LSE [..., q].

    With causal, query i of q sees the first k - q + 1 + i keys (the queries are the last q
    tokens). A row that sees no key gets probabilities 0 and LSE -inf.
    """
    if causal:
        num_q, num_k = scores.shape[-2:]
        hidden = torch.ones(num_q, num_k, dtype=torch.bool, device=scores.device).triu(num_k - num_q + 1)
        scores = scores.masked_fill(hidden, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)
    return torch.exp(scores - lse[..., None]).nan_to_num(0.0), lse


def mla_decode(q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor,
               head_dim_v: int = HEAD_DIM_V, softmax_scale: float | None = None,
               causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """MLA decode in float32 on q's device: out [b, s_q, h_q, head_dim_v] in q's dtype, lse [b, h_q, s_q]."""
    b, s_q, h_q, d = q.shape
    if softmax_scale is None:
        softmax_scale = d ** -0.5
    out = torch.zeros(b, s_q, h_q, head_dim_v, dtype=torch.float32, device=q.device)
    lse = torch.full((b, h_q, s_q), -math.inf, dtype=torch.float32, device=q.device)
    page_size = k_cache.shape[1]
    for i, n in enumerate(cache_seqlens.tolist()):
        if n <= 0:
            continue
        pages = block_table[i, : -(-n // page_size)].long()
        kv = k_cache[pages].reshape(-1, d)[:n].float()
        probs, lse[i] = softmax_with_lse(torch.einsum("shd,nd->hsn", q[i].float(), kv) * softmax_scale, causal)
        out[i] = torch.einsum("hsn,nv->shv", probs, kv[:, :head_dim_v])
    return out.to(q.dtype), lse
