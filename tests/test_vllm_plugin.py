"""The vLLM plugin on CPU: registration through the entry point, the builder's mapping, forward_mqa."""
import importlib.metadata
from types import SimpleNamespace

import pytest
import torch

import mla_backend
from mla_backend import reference
from mla_backend.testing import make_decode_inputs

vllm = pytest.importorskip("vllm", reason="needs vLLM 0.26.0 installed")


def test_entry_point_registers_custom_backend():
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    eps = [ep for ep in importlib.metadata.entry_points(group="vllm.general_plugins") if ep.name == "mla_backend"]
    assert len(eps) == 1 and eps[0].value == "mla_backend.vllm:register"
    eps[0].load()()
    from mla_backend.vllm.backend import MLADecodeBackend

    assert AttentionBackendEnum.CUSTOM.get_class() is MLADecodeBackend


def test_backend_capabilities():
    from vllm.platforms.interface import DeviceCapability

    from mla_backend.vllm.backend import MLADecodeBackend as B

    assert B.is_mla() and B.get_supported_kernel_block_sizes() == [64]
    assert B.supports_head_size(576) and not B.supports_head_size(128)
    assert B.supports_dtype(torch.bfloat16) and B.supports_dtype(torch.float16)
    assert B.supports_kv_cache_dtype("auto") and not B.supports_kv_cache_dtype("fp8")
    assert B.supports_compute_capability(DeviceCapability(9, 0))
    assert not B.supports_compute_capability(DeviceCapability(8, 0))
    assert B.supports_combination(576, torch.bfloat16, "auto", 64, True, False, False, False, None) is None
    assert "64" in B.supports_combination(576, torch.bfloat16, "auto", 16, True, False, False, False, None)
    assert "sparse" in B.supports_combination(576, torch.bfloat16, "auto", 64, True, False, True, False, None)


def build_decode(seq_lens, s_q, schedule, block_table=None):
    """The builder's _build_decode on vLLM-shaped metadata: uniform batches of s_q query tokens."""
    from mla_backend.vllm.backend import MLADecodeMetadataBuilder

    builder = object.__new__(MLADecodeMetadataBuilder)  # _build_decode reads only the schedule
    builder.schedule = schedule
    seq = torch.tensor(seq_lens, dtype=torch.int32)
    query_start_loc = torch.arange(len(seq_lens) + 1, dtype=torch.int32) * s_q
    if block_table is None:
        block_table = torch.zeros(len(seq_lens), 1, dtype=torch.int32)
    return builder._build_decode(block_table, seq, max(seq_lens), query_start_loc, query_start_loc,
                                 len(seq_lens) * s_q, None)


@pytest.mark.parametrize("s_q", [1, 2, 4])  # plain decode, and uniform spec-decode batches
def test_builder_maps_to_kernel_metadata(s_q):
    from mla_backend.schedule import DecodeSchedule

    h_q = 16
    schedule = DecodeSchedule(h_q, max_num_seqs=64, device=torch.device("cpu"))
    for seq_lens in ([5, 4096, 70000], [1] * 64, [300, 0, 0, 0]):  # the last: a padded CUDA-graph batch
        block_table = torch.randint(0, 100, (len(seq_lens), 3), dtype=torch.int32)
        meta = build_decode(seq_lens, s_q, schedule, block_table)
        want_tsm, want_splits = mla_backend.get_mla_metadata(torch.tensor(seq_lens, dtype=torch.int32), s_q * h_q, 1)
        assert torch.equal(meta.tile_scheduler_metadata, want_tsm) and torch.equal(meta.num_splits, want_splits)
        assert meta.block_table is block_table and meta.seq_lens.tolist() == seq_lens
        # Views of the persistent buffers, so a captured graph reads the new schedule.
        assert meta.tile_scheduler_metadata.data_ptr() == schedule.metadata_buffer.data_ptr()
        assert meta.num_splits.data_ptr() == schedule.num_splits_buffer.data_ptr()


def test_schedule_rejects_batches_beyond_buffers():
    from mla_backend.schedule import DecodeSchedule

    schedule = DecodeSchedule(16, max_num_seqs=2, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="exceeds the buffers"):
        schedule.build(torch.tensor([1, 2, 3], dtype=torch.int32), 1)


@pytest.mark.parametrize("s_q", [1, 3])
def test_forward_mqa_runs_the_kernel_api(s_q):
    from mla_backend.vllm.backend import MLADecodeImpl
    from mla_backend.schedule import DecodeSchedule

    h_q, seq_lens = 16, [70, 3, 200]
    inp = make_decode_inputs(seq_lens, s_q, h_q, seed=s_q)
    impl = object.__new__(MLADecodeImpl)  # forward_mqa reads only these
    impl.kv_lora_rank, impl.scale = 512, 0.1
    meta = SimpleNamespace(num_decodes=len(seq_lens),
                           decode=build_decode(seq_lens, s_q, DecodeSchedule(h_q, 8, torch.device("cpu")),
                                               inp.block_table))
    q_tokens = inp.q.view(-1, h_q, 576)  # vLLM's [num_tokens, heads, 576]
    out, lse = impl.forward_mqa((q_tokens[..., :512], q_tokens[..., 512:]), inp.k_cache.squeeze(2), meta, None)
    ref_out, ref_lse = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, 0.1, True)
    assert torch.equal(out, ref_out.view(-1, h_q, 512)) and torch.equal(lse, ref_lse)


def test_cpu_prefill_matches_sdpa():
    from mla_backend.vllm.cpu import varlen_attention

    g = torch.Generator().manual_seed(0)
    lens = [5, 1, 9]
    cu = torch.tensor([0, 5, 6, 15], dtype=torch.int32)
    q, k = (torch.randn(15, 4, 24, generator=g) for _ in range(2))
    v = torch.randn(15, 4, 16, generator=g)
    out, lse = varlen_attention(q, k, v, cu, cu, 0.2, causal=True)
    for i, n in enumerate(lens):
        s = slice(int(cu[i]), int(cu[i + 1]))
        want = torch.nn.functional.scaled_dot_product_attention(
            q[s].transpose(0, 1), k[s].transpose(0, 1), v[s].transpose(0, 1), is_causal=True, scale=0.2)
        torch.testing.assert_close(out[s], want.transpose(0, 1), rtol=1e-5, atol=1e-5)
        scores = torch.einsum("qhd,khd->hqk", q[s], k[s]) * 0.2
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -float("inf"))
        torch.testing.assert_close(lse[:, s], torch.logsumexp(scores, -1))


def test_cpu_cache_write_skips_padding_slots():
    from mla_backend.vllm.cpu import write_mla_cache

    cache = torch.zeros(2, 64, 576)
    kv_c, k_pe = torch.randn(3, 512), torch.randn(3, 1, 64)
    write_mla_cache(kv_c, k_pe, cache, torch.tensor([70, -1, 3]))
    flat = cache.view(-1, 576)
    assert torch.equal(flat[70], torch.cat([kv_c[0], k_pe[0, 0]])) and torch.equal(flat[3, :512], kv_c[2])
    assert int((flat.abs().sum(-1) > 0).sum()) == 2
