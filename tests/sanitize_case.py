"""One small decode with split requests, for compute-sanitizer (see kernels/DESIGN.md):

    PYTHONPATH=. compute-sanitizer --tool memcheck python3 tests/sanitize_case.py
    PYTHONPATH=. compute-sanitizer --tool racecheck python3 tests/sanitize_case.py [S_Q H_Q] [--q-apart]

S_Q H_Q default to 2 64 (two full M tiles); 5 16 gives 64 + 16 rows. --q-apart hands q over as
vLLM's MLA layer does (engine_query: latent and rope columns in two tensors, sized exactly), so
that memcheck sees any read past either.
"""
import sys

import mla_backend
from mla_backend import reference
from mla_backend.testing import cal_diff, engine_query, make_decode_inputs

q_apart = "--q-apart" in sys.argv
shape = [a for a in sys.argv[1:] if a != "--q-apart"]
s_q, h_q = (int(a) for a in shape) if shape else (2, 64)
inp = make_decode_inputs([3000, 0, 65, 130], s_q=s_q, h_q=h_q, device="cuda", seed=0, poison_tails=True)
q, q_pe = engine_query(inp.q) if q_apart else (inp.q, None)
tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, s_q * h_q, 1)
out, lse = mla_backend.flash_mla_with_kvcache(q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, tsm,
                                              splits, causal=True, q_pe=q_pe)
ref_out, ref_lse = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, 576 ** -0.5,
                                        True)
cos_out, cos_lse = cal_diff(out, ref_out)[0], cal_diff(lse, ref_lse)[0]
print(f"q apart {q_apart} splits {splits.tolist()} out cos {cos_out:.2e} lse cos {cos_lse:.2e}")
assert cos_out < 1e-5 and cos_lse < 1e-6
