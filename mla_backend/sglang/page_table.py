"""SGLang's req_to_token pool mapped onto the kernel's 64-token page table."""
from __future__ import annotations

import torch

from mla_backend.reference import PAGE_SIZE


def check_page_size(page_size: int) -> None:
    if page_size != PAGE_SIZE:
        raise ValueError(f"the mla_backend attention backend needs --page-size {PAGE_SIZE}, got {page_size}")


def page_table_from_req_to_token(req_to_token: torch.Tensor, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor,
                                 max_pages: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Block table int32 [bs, max_pages] of the requests at `req_pool_indices`.

    With --page-size 64, SGLang hands each request whole pages: token t of request r
    sits in slot req_to_token[r, t] = page * 64 + t % 64, so page j of r is
    req_to_token[r, 64 j] // 64. Entries past a request's pages are 0; the kernel reads
    none of them. Fixed shapes and no host synchronisation, so a CUDA graph can replay
    it; `out`, when given, receives the table in its leading rows and columns.
    """
    columns = torch.arange(max_pages, device=req_to_token.device) * PAGE_SIZE
    in_pool = columns < req_to_token.shape[1]
    first_slots = req_to_token[req_pool_indices.long()[:, None], columns.clamp(max=req_to_token.shape[1] - 1)[None, :]]
    used = in_pool & (columns[None, :] < seq_lens[:, None])
    table = torch.where(used, torch.div(first_slots, PAGE_SIZE, rounding_mode="floor"), 0).to(torch.int32)
    if out is None:
        return table
    view = out[: table.shape[0], :max_pages]
    view.copy_(table)
    return view
