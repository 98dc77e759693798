"""The custom ops on CPU: the reference path, and tracing through their fake implementations."""
import torch

import mla_backend
from mla_backend import reference
from mla_backend.testing import cal_diff, make_decode_inputs


def test_cpu_op_is_the_reference():
    inp = make_decode_inputs([0, 65, 300], s_q=2, h_q=5, seed=3)
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, 10, 1)
    out, lse = mla_backend.flash_mla_with_kvcache(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                                  tsm, splits, causal=True)
    ref_out, ref_lse = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                            576 ** -0.5, True)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)
    cos, rel = cal_diff(lse, ref_lse)
    assert cos == 0.0 and rel == 0.0


def test_ops_trace_under_torch_compile():
    inp = make_decode_inputs([64, 100], s_q=1, h_q=16, seed=4)

    def decode(q, k_cache, block_table, seqlens):
        tsm, splits = torch.ops.mla_backend.get_mla_metadata(seqlens, 16, 1)
        return torch.ops.mla_backend.fwd_kvcache(q, k_cache, block_table, seqlens, 512, tsm, splits,
                                                 576 ** -0.5, False)

    compiled = torch.compile(decode, fullgraph=True, backend="aot_eager")
    out, lse = compiled(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens)
    ref_out, ref_lse = decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens)
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)


def test_cal_diff_flags_mismatched_inf():
    x = torch.tensor([0.0, -float("inf")])
    assert cal_diff(x, torch.tensor([0.0, 1.0]))[0] == float("inf")
    assert cal_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == (0.0, 0.0)


def test_public_api_traces_under_torch_compile():
    inp = make_decode_inputs([64, 100], s_q=2, h_q=16, seed=5)

    def decode(q, k_cache, block_table, seqlens):
        tsm, splits = mla_backend.get_mla_metadata(seqlens, 32, 1)
        return mla_backend.flash_mla_with_kvcache(q, k_cache, block_table, seqlens, 512, tsm, splits, causal=True)

    compiled = torch.compile(decode, fullgraph=True, backend="aot_eager")
    out, lse = compiled(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens)
    ref_out, ref_lse = decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens)
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)


def test_rope_columns_apart_trace_under_torch_compile():
    inp = make_decode_inputs([64, 100], s_q=2, h_q=16, seed=6)

    def decode(q_latent, q_pe, k_cache, block_table, seqlens):
        tsm, splits = mla_backend.get_mla_metadata(seqlens, 32, 1)
        return mla_backend.flash_mla_with_kvcache(q_latent, k_cache, block_table, seqlens, 512, tsm, splits,
                                                  causal=True, q_pe=q_pe)

    compiled = torch.compile(decode, fullgraph=True, backend="aot_eager")
    args = (inp.q[..., :512], inp.q[..., 512:], inp.k_cache, inp.block_table, inp.cache_seqlens)
    out, lse = compiled(*args)
    ref_out, ref_lse = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                            576 ** -0.5, True)
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)
