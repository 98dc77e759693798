"""Bad input raises ValueError naming the argument (CPU tensors; the checks are device-independent)."""
import pytest
import torch

import mla_backend
from mla_backend import ops
from mla_backend.testing import make_decode_inputs


@pytest.fixture
def good():
    inp = make_decode_inputs([100, 7], s_q=2, h_q=4)
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, 2 * 4, 1)
    return dict(q=inp.q, k_cache=inp.k_cache, block_table=inp.block_table, cache_seqlens=inp.cache_seqlens,
                head_dim_v=512, tile_scheduler_metadata=tsm, num_splits=splits)


def call(args, **changes):
    return mla_backend.flash_mla_with_kvcache(**{**args, **changes})


def test_good_inputs_run(good):
    out, lse = call(good)
    assert out.shape == (2, 2, 4, 512) and lse.shape == (2, 4, 2)
    assert torch.isfinite(out.float()).all() and torch.isfinite(lse).all()


BAD_INPUTS = [
    ("q", lambda a: a["q"].float(), "q must be bfloat16 or float16"),
    ("q", lambda a: a["q"][..., :512], "q's head dim must be 576"),
    ("q", lambda a: a["q"][0], r"q must be \[batch"),
    ("q", lambda a: a["q"].transpose(-1, -2).contiguous().transpose(-1, -2), "q must be contiguous in its last dim"),
    ("q", lambda a: torch.empty(2, 2, 4, 577, dtype=torch.bfloat16)[..., 1:],
     "q's batch, token and head strides must be multiples of 8"),
    ("k_cache", lambda a: a["k_cache"].half(), "k_cache must have q's dtype"),
    ("k_cache", lambda a: torch.empty(a["k_cache"].numel() + 1, dtype=torch.bfloat16)[1:].view(a["k_cache"].shape),
     "k_cache's page and token strides must be multiples of 8 elements and its data 16-byte aligned"),
    ("k_cache", lambda a: a["k_cache"].view(-1, 32, 1, 576), "k_cache's page size .* must be 64"),
    ("k_cache", lambda a: a["k_cache"][..., :512], "k_cache's head dim must be 576"),
    ("k_cache", lambda a: a["k_cache"].expand(-1, -1, 2, -1), "k_cache must have 1 KV head"),
    ("k_cache", lambda a: a["k_cache"].flatten(), r"k_cache must be \[num_blocks, 64, 1, 576\]"),
    ("head_dim_v", lambda a: 128, "head_dim_v must be 512"),
    ("block_table", lambda a: a["block_table"].long(), "block_table must be int32"),
    ("block_table", lambda a: a["block_table"][:1], r"block_table must have shape \[2, \*\]"),
    ("block_table", lambda a: a["block_table"].t().contiguous().t(), "block_table must be contiguous"),
    ("cache_seqlens", lambda a: a["cache_seqlens"].float(), "cache_seqlens must be int32"),
    ("cache_seqlens", lambda a: torch.tensor([100, -1], dtype=torch.int32), "cache_seqlens must be >= 0"),
    ("cache_seqlens", lambda a: torch.tensor([100, 129], dtype=torch.int32), "too few for cache_seqlens up to 129"),
    ("tile_scheduler_metadata", lambda a: a["tile_scheduler_metadata"][:, :4],
     r"tile_scheduler_metadata must have shape \[\*, 8\]"),
    ("num_splits", lambda a: a["num_splits"][:2], r"num_splits must have shape \[3\]"),
    ("num_splits", lambda a: [0, 1, 2], "num_splits must be a torch.Tensor"),
    ("q", lambda a: a["q"][:, :0], "q must have seqlen_q >= 1"),
    ("block_table", lambda a: a["block_table"][0, 0], r"block_table must have shape \[2, \*\]"),
    ("cache_seqlens", lambda a: a["cache_seqlens"].repeat_interleave(2)[::2], "cache_seqlens must be contiguous"),
    ("tile_scheduler_metadata", lambda a: a["tile_scheduler_metadata"].repeat(1, 2)[:, :8],
     "tile_scheduler_metadata must be contiguous"),
]


BAD_ROPE_INPUTS = [
    ("q", lambda a: torch.cat((a["q"], a["q_pe"]), -1), "q's head dim must be 512 .*q_pe holds the rope"),
    ("q_pe", lambda a: a["q_pe"].half(), "q_pe must have q's dtype"),
    ("q_pe", lambda a: a["q_pe"][:1], r"q_pe must have shape \[2, 2, 4, 64\]"),
    ("q_pe", lambda a: a["q_pe"][..., :32], r"q_pe must have shape \[2, 2, 4, 64\]"),
    ("q_pe", lambda a: a["q_pe"].transpose(-1, -2).contiguous().transpose(-1, -2),
     "q_pe must be contiguous in its last dim"),
    ("q_pe", lambda a: torch.empty(2, 2, 4, 65, dtype=torch.bfloat16)[..., 1:],
     "q_pe's batch, token and head strides must be multiples of 8"),
    ("q_pe", lambda a: a["q_pe"].tolist(), "q_pe must be a torch.Tensor"),
]
# Each bad input beside the good arguments it spoils: q whole (`good`), or apart (`good_apart`).
BAD_CASES = [("good", *c) for c in BAD_INPUTS] + [("good_apart", *c) for c in BAD_ROPE_INPUTS]


@pytest.fixture
def good_apart(good):
    """good, with q's rope columns given apart as q_pe."""
    return {**good, "q": good["q"][..., :512], "q_pe": good["q"][..., 512:]}


@pytest.mark.parametrize("inputs,name,value,match", BAD_CASES)
def test_bad_input_names_argument(request, inputs, name, value, match):
    args = request.getfixturevalue(inputs)
    with pytest.raises(ValueError, match=match):
        call(args, **{name: value(args)})


@pytest.mark.parametrize("inputs,name,value,match",
                         BAD_CASES + [("good", None, None, None), ("good_apart", None, None, None)])
def test_fast_check_agrees_with_named_checks(request, inputs, name, value, match):
    # The hot path tests every condition in one expression and runs the one-by-one checks only
    # when it fails: both must reject the same inputs (the seqlen values are checked apart).
    good_args = request.getfixturevalue(inputs)
    args = dict(good_args) if name is None else {**good_args, name: value(good_args)}
    fast_ok = ops._decode_inputs_ok(**args)
    try:
        ops._raise_first_input_error(**args)
        named_ok = True
    except ValueError:
        named_ok = False
    assert fast_ok == named_ok


def test_rope_columns_apart_give_the_whole_q_output(good, good_apart):
    whole, apart = call(good), call(good_apart)
    assert torch.equal(whole[0], apart[0]) and torch.equal(whole[1], apart[1])


def test_device_mismatch_is_named(good):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to put one argument on")
    with pytest.raises(ValueError, match="k_cache must be on"):
        call(good, k_cache=good["k_cache"].cuda())


def test_metadata_bad_input():
    seqlens = torch.tensor([1, 2], dtype=torch.int32)
    with pytest.raises(ValueError, match="cache_seqlens must be a 1-D int32"):
        mla_backend.get_mla_metadata(seqlens.long(), 16, 1)
    with pytest.raises(ValueError, match="num_heads_k must be 1"):
        mla_backend.get_mla_metadata(seqlens, 16, 2)
    with pytest.raises(ValueError, match="num_q_tokens_per_head_k must be >= 1"):
        mla_backend.get_mla_metadata(seqlens, 0, 1)
