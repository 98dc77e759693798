"""The sm_90a kernels against the float32 reference. Skipped without an sm_90 GPU."""
import random

import pytest
import torch

import mla_backend
from mla_backend import reference
from mla_backend.testing import cal_diff, engine_query, make_decode_inputs, poison_allocator, sm90_skip_reason

_reason = sm90_skip_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

OUT_COS, OUT_REL = 1e-5, 1e-2   # bf16/fp16 P and V against float32
LSE_COS, LSE_REL = 1e-6, 1e-4


def run_and_check(seqlens, s_q, h_q, causal, dtype=torch.bfloat16, seed=0, page_key_scale=None):
    """page_key_scale(j): a factor for the keys of every request's j-th page (default 1)."""
    inp = make_decode_inputs(seqlens, s_q, h_q, dtype=dtype, device="cuda", seed=seed,
                             unused_entry=2**30, poison_tails=True)
    if page_key_scale is not None:
        for b, seqlen in enumerate(seqlens):
            for j in range(-(-seqlen // 64)):
                inp.k_cache[inp.block_table[b, j]] *= page_key_scale(j)
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, s_q * h_q, 1)
    poison_allocator(4 * len(seqlens) * s_q * h_q * 1024 * 8, "cuda")
    out, lse = mla_backend.flash_mla_with_kvcache(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                                  tsm, splits, causal=causal)
    torch.cuda.synchronize()
    ref_out, ref_lse = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                            576 ** -0.5, causal)
    assert out.shape == ref_out.shape and out.dtype == dtype and lse.shape == ref_lse.shape
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) or NaN output"
    cos, rel = cal_diff(out, ref_out)
    assert cos < OUT_COS and rel < OUT_REL, f"out: cos {cos:.2e} rel {rel:.2e}"
    cos, rel = cal_diff(lse, ref_lse)
    assert cos < LSE_COS and rel < LSE_REL, f"lse: cos {cos:.2e} rel {rel:.2e}"
    return tsm, splits


def random_seqlens(rng, b):
    return [rng.choice([0, 1, 63, 64, 65, 127, 1000, 4097, rng.randint(1, 20000)]) for _ in range(b)]


@pytest.mark.parametrize("h_q", [16, 32, 64, 128, 3, 63])
@pytest.mark.parametrize("s_q", [1, 2, 3, 4, 8])
def test_matrix(h_q, s_q):
    rng = random.Random(h_q * 100 + s_q)
    seqlens = random_seqlens(rng, rng.choice([1, 5, 16]))
    run_and_check(seqlens, s_q, h_q, causal=s_q > 1, seed=h_q + s_q)


@pytest.mark.parametrize("s_q,h_q", [(5, 16), (6, 16), (9, 16), (3, 32), (5, 13), (2, 40)])
@pytest.mark.parametrize("causal", [True, False])
def test_leftover_rows(s_q, h_q, causal):
    """q_rows % 64 of 1-32 behind full M tiles (h16 s_q5: 64 + 16 rows), with a long request split
    across many parts."""
    rng = random.Random(s_q * 1000 + h_q)
    seqlens = random_seqlens(rng, 24) + [0, 70000]
    rng.shuffle(seqlens)
    _, splits = run_and_check(seqlens, s_q, h_q, causal=causal, seed=s_q + h_q)
    assert splits[-1].item() > len(seqlens), "some request is split"


@pytest.mark.parametrize("s_q,h_q", [(1, 64), (4, 64), (2, 16), (5, 16)])
def test_fp16(s_q, h_q):
    run_and_check([300, 0, 5000, 64], s_q, h_q, causal=True, dtype=torch.float16, seed=7)


def test_non_causal_multi_token():
    run_and_check([10, 700, 2048], 4, 16, causal=False, seed=8)


def test_long_context():
    run_and_check([131072, 1, 0, 77777], 1, 128, causal=False, seed=9)
    run_and_check([131072, 100], 2, 16, causal=True, seed=10)


def test_batch_1024():
    rng = random.Random(11)
    run_and_check([rng.randint(0, 700) for _ in range(1024)], 1, 16, causal=False, seed=11)


def test_skewed_batch_is_split():
    _, splits = run_and_check([4641, 45118, 1730, 1696], 4, 16, causal=True, seed=12)
    assert int(splits[2] - splits[1]) > 1


@pytest.mark.parametrize("s_q,h_q,seqlens", [(4, 16, [4641, 45118, 1730, 1696]), (1, 128, [131072, 300, 20000]),
                                             (2, 64, [2000] * 100)])
def test_calls_are_deterministic(s_q, h_q, seqlens):
    """Each piece of a split request covers pages fixed by the metadata, so two calls give the same
    bits (engines' batch-invariant modes and reproducible sampling rely on it; DESIGN, "Twenty-third
    session": a schedule that hands out pages by arrival loses it)."""
    inp = make_decode_inputs(seqlens, s_q, h_q, device="cuda", seed=26)
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, s_q * h_q, 1)
    assert int((splits[1:] - splits[:-1]).max()) > 1, "no split request to test"
    first = mla_backend.flash_mla_with_kvcache(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                               tsm, splits, causal=s_q > 1)
    for _ in range(3):
        again = mla_backend.flash_mla_with_kvcache(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                                   tsm, splits, causal=s_q > 1)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_combine_over_several_passes():
    # A large grid gets one combine warp per row, which merges 32 splits per pass; a long request
    # among 127 short ones is split more than 32 ways on a 132-SM card, so its rows are merged
    # over two passes with the running max carried between them.
    rng = random.Random(17)
    _, splits = run_and_check([131072] + [rng.randint(0, 3000) for _ in range(127)], 1, 64, causal=False, seed=17)
    if torch.cuda.get_device_properties(0).multi_processor_count >= 132:
        assert int(splits[1] - splits[0]) > 32


def test_combine_indexed_by_part():
    # More requests than parts: the combine's grid runs over parts, each merging the split
    # request whose last piece begins it; the long request spans several parts, so some parts
    # begin with one of its middle pieces and merge nothing.
    rng = random.Random(18)
    seqlens = [40000] + [rng.randint(0, 3000) for _ in range(199)]
    tsm, splits = run_and_check(seqlens, 2, 64, causal=True, seed=18)
    assert len(seqlens) > tsm.size(0)
    assert int(splits[1] - splits[0]) >= 3


def test_row_max_growing_across_pages():
    # Scores whose row max climbs page after page, by steps above and below the kernel's lazy
    # rescale threshold (8 in log2 units): O is rescaled at some pages and keeps a stale max
    # (P up to 2^8) at others.
    def growth(j):
        return 1.0 + 2.5 * (j // 2) + 0.4 * (j % 2)

    run_and_check([1500, 640, 64, 2000], 1, 16, causal=False, seed=15, page_key_scale=growth)
    run_and_check([1500, 700], 2, 128, causal=True, seed=16, page_key_scale=growth)


def test_all_empty():
    run_and_check([0, 0, 0], 2, 32, causal=True, seed=13)


def test_strided_q():
    inp = make_decode_inputs([500, 1500], 2, 32, device="cuda", seed=14)
    q = torch.randn(2, 32, 2, 576, device="cuda", dtype=torch.bfloat16).transpose(1, 2)  # head-major storage
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, 64, 1)
    out, lse = mla_backend.flash_mla_with_kvcache(q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                                  tsm, splits, causal=True)
    ref_out, ref_lse = reference.mla_decode(q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, 576 ** -0.5,
                                            True)
    assert cal_diff(out, ref_out)[0] < OUT_COS and cal_diff(lse, ref_lse)[0] < LSE_COS


@pytest.mark.parametrize("s_q,h_q", [(1, 16), (2, 128), (5, 16)])
def test_rope_columns_apart(s_q, h_q):
    """q's latent and rope columns from two tensors laid out as vLLM's MLA layer makes them (the
    latent part a transposed bmm output, the rope part a slice of the q projection) give the very
    output of the concatenated q, and that output matches the reference."""
    seqlens = [0, 1, 65, 3000, 20000, 777]
    inp = make_decode_inputs(seqlens, s_q, h_q, device="cuda", seed=15)
    b = len(seqlens)
    q_latent, q_pe = engine_query(inp.q)
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, s_q * h_q, 1)
    whole = mla_backend.flash_mla_with_kvcache(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                               tsm, splits, causal=True)
    poison_allocator(4 * b * s_q * h_q * 1024 * 8, "cuda")
    apart = mla_backend.flash_mla_with_kvcache(q_latent, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                               tsm, splits, causal=True, q_pe=q_pe)
    assert torch.equal(apart[0], whole[0]) and torch.equal(apart[1], whole[1])
    ref_out, ref_lse = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                            576 ** -0.5, True)
    assert cal_diff(apart[0], ref_out)[0] < OUT_COS and cal_diff(apart[1], ref_lse)[0] < LSE_COS


@pytest.mark.parametrize("s_q,h_q", [(1, 16), (2, 128), (8, 63)])
def test_metadata_matches_model(s_q, h_q):
    rng = random.Random(s_q * h_q)
    seqlens = random_seqlens(rng, 77) + [131072]
    cache_seqlens = torch.tensor(seqlens, dtype=torch.int32, device="cuda")
    tsm, splits = mla_backend.get_mla_metadata(cache_seqlens, s_q * h_q, 1)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    ref_tsm, ref_splits = reference.get_mla_metadata(cache_seqlens.cpu(), s_q * h_q, 1, num_sms)
    assert torch.equal(tsm.cpu(), ref_tsm) and torch.equal(splits.cpu(), ref_splits)


def test_one_request_a_part():
    # No more requests than parts, each within a part's budget (the e2e decode shape at h128):
    # every request gets a part of its own and none is split.
    rng = random.Random(20)
    seqlens = [rng.randint(2048, 2560) for _ in range(64)]
    tsm, splits = run_and_check(seqlens, 1, 128, causal=False, seed=20)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    ref_tsm, ref_splits = reference.get_mla_metadata(torch.tensor(seqlens, dtype=torch.int32), 128, 1, num_sms)
    assert torch.equal(tsm.cpu(), ref_tsm) and torch.equal(splits.cpu(), ref_splits)
    if num_sms >= 132:
        assert splits.tolist() == list(range(len(seqlens) + 1))


def test_metadata_matches_model_large_batch():
    # 9000 requests: more than one pass of every per-request loop of the one-warp scheduler.
    rng = random.Random(19)
    cache_seqlens = torch.tensor([rng.randint(0, 5000) for _ in range(9000)], dtype=torch.int32, device="cuda")
    tsm, splits = mla_backend.get_mla_metadata(cache_seqlens, 128, 1)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    ref_tsm, ref_splits = reference.get_mla_metadata(cache_seqlens.cpu(), 128, 1, num_sms)
    assert torch.equal(tsm.cpu(), ref_tsm) and torch.equal(splits.cpu(), ref_splits)


def test_cuda_graph_replay_with_new_seqlens():
    b, s_q, h_q, max_blocks = 8, 2, 64, 40
    rng = random.Random(15)
    inp = make_decode_inputs([max_blocks * 64] * b, s_q, h_q, device="cuda", seed=15)
    seqlens = torch.zeros(b, dtype=torch.int32, device="cuda")
    q = inp.q.clone()

    def step():
        tsm, splits = mla_backend.get_mla_metadata(seqlens, s_q * h_q, 1)
        return mla_backend.flash_mla_with_kvcache(q, inp.k_cache, inp.block_table, seqlens, 512, tsm, splits,
                                                  causal=True)

    seqlens.fill_(100)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = step()

    for trial in range(4):
        new = [rng.choice([0, 1, 65, rng.randint(1, max_blocks * 64)]) for _ in range(b)]
        seqlens.copy_(torch.tensor(new, dtype=torch.int32))
        q.copy_(torch.randn_like(q))
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref_out, ref_lse = reference.mla_decode(q, inp.k_cache, inp.block_table, seqlens, 512, 576 ** -0.5, True)
        cos, rel = cal_diff(out, ref_out)
        assert cos < OUT_COS and rel < OUT_REL, f"trial {trial} {new}: out cos {cos:.2e} rel {rel:.2e}"
        cos, rel = cal_diff(lse, ref_lse)
        assert cos < LSE_COS and rel < LSE_REL, f"trial {trial} {new}: lse cos {cos:.2e} rel {rel:.2e}"


def test_block_table_overflow_is_reported_on_gpu():
    inp = make_decode_inputs([128, 64], 1, 16, device="cuda", seed=16)
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, 16, 1)
    with pytest.raises(ValueError, match="too few for cache_seqlens"):
        mla_backend.flash_mla_with_kvcache(inp.q, inp.k_cache, inp.block_table[:, :1].contiguous(),
                                           inp.cache_seqlens, 512, tsm, splits)
