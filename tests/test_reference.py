"""The float32 reference against a naive per-head softmax, on CPU."""
import math

import pytest
import torch

from mla_backend import reference
from mla_backend.testing import make_decode_inputs


def naive_decode(q, k_cache, block_table, seqlens, scale, causal):
    b, s_q, h_q, _ = q.shape
    out = torch.zeros(b, s_q, h_q, 512, dtype=torch.float64)
    lse = torch.full((b, h_q, s_q), -math.inf, dtype=torch.float64)
    for i in range(b):
        n = seqlens[i]
        keys = torch.stack([k_cache[block_table[i, t // 64], t % 64, 0].double() for t in range(n)]) if n else None
        for s in range(s_q):
            visible = n - s_q + 1 + s if causal else n
            for h in range(h_q):
                if visible <= 0:
                    continue
                logits = [float(q[i, s, h].double() @ keys[t]) * scale for t in range(visible)]
                m = max(logits)
                weights = [math.exp(x - m) for x in logits]
                total = sum(weights)
                out[i, s, h] = sum(w * keys[t, :512] for t, w in enumerate(weights)) / total
                lse[i, h, s] = m + math.log(total)
    return out, lse


@pytest.mark.parametrize("s_q,causal", [(1, False), (3, True), (2, False)])
def test_reference_matches_naive_softmax(s_q, causal):
    seqlens = [0, 1, 63, 64, 130, 2]
    inp = make_decode_inputs(seqlens, s_q=s_q, h_q=3, dtype=torch.float32, seed=s_q)
    scale = 576 ** -0.5
    out, lse = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, scale, causal)
    ref_out, ref_lse = naive_decode(inp.q, inp.k_cache, inp.block_table, seqlens, scale, causal)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse.double()[finite], ref_lse[finite], rtol=1e-5, atol=1e-5)
    # seqlen 0: out 0, lse -inf; causal rows that see no key likewise.
    assert torch.all(out[0] == 0) and torch.all(torch.isneginf(lse[0]))
    if causal:
        assert torch.all(torch.isneginf(lse[1, :, : s_q - 1])) and torch.all(out[1, : s_q - 1] == 0)


def test_reference_ignores_tokens_past_seqlen():
    inp = make_decode_inputs([70, 5], s_q=1, h_q=4, dtype=torch.float32, poison_tails=True, unused_entry=10**6)
    out, lse = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
