"""SGLang's req_to_token pool to the kernel's page table, on hand-made pools (CPU, no SGLang needed)."""
import pytest
import torch

from mla_backend import reference
from mla_backend.sglang.page_table import check_page_size, page_table_from_req_to_token
from mla_backend.testing import make_decode_inputs, req_to_token_pool


def test_pages_of_each_request():
    seq_lens = [1, 64, 65, 300, 0]
    inp = make_decode_inputs(seq_lens, 1, 4, seed=1)
    req_to_token, rows = req_to_token_pool(inp.block_table, seq_lens, pool_rows=12, max_context=512)
    table = page_table_from_req_to_token(req_to_token, rows, inp.cache_seqlens, max_pages=8)
    assert table.dtype == torch.int32 and table.shape == (5, 8)
    for i, n in enumerate(seq_lens):
        pages = -(-n // 64)
        assert torch.equal(table[i, :pages], inp.block_table[i, :pages]), i
        assert torch.all(table[i, pages:] == 0)


def test_decode_through_mapped_table_equals_reference():
    seq_lens = [130, 7, 64]
    inp = make_decode_inputs(seq_lens, 2, 8, seed=2, unused_entry=10**6)
    req_to_token, rows = req_to_token_pool(inp.block_table, seq_lens, pool_rows=8, max_context=256)
    table = page_table_from_req_to_token(req_to_token, rows, inp.cache_seqlens, max_pages=4)
    got = reference.mla_decode(inp.q, inp.k_cache, table, inp.cache_seqlens, causal=True)
    want = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, causal=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_padded_graph_batch_into_persistent_buffer():
    seq_lens = [100, 0, 0]  # a CUDA-graph batch padded with empty requests at pool row 0
    inp = make_decode_inputs(seq_lens[:1], 1, 4, seed=3)
    req_to_token, rows = req_to_token_pool(inp.block_table, seq_lens[:1], pool_rows=4, max_context=128)
    indices = torch.tensor([int(rows[0]), 0, 0])
    buffer = torch.full((8, 16), -7, dtype=torch.int32)
    view = page_table_from_req_to_token(req_to_token, indices, torch.tensor(seq_lens), max_pages=4, out=buffer)
    assert view.data_ptr() == buffer.data_ptr() and view.shape == (3, 4)
    assert torch.equal(view[0, :2], inp.block_table[0, :2]) and torch.all(view[0, 2:] == 0)
    assert torch.all(view[1:] == 0) and torch.all(buffer[3:] == -7) and torch.all(buffer[:, 4:] == -7)


def test_table_wider_than_pool_pads_with_zeros():
    seq_lens = [128]
    inp = make_decode_inputs(seq_lens, 1, 4, seed=4)
    req_to_token, rows = req_to_token_pool(inp.block_table, seq_lens, pool_rows=2, max_context=128)
    table = page_table_from_req_to_token(req_to_token, rows, inp.cache_seqlens, max_pages=5)
    assert torch.equal(table[0, :2], inp.block_table[0, :2]) and torch.all(table[0, 2:] == 0)


def test_page_size_must_be_64():
    check_page_size(64)
    with pytest.raises(ValueError, match="needs --page-size 64, got 16"):
        check_page_size(16)
