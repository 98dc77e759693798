#!/usr/bin/env python3
"""One decode config, for Nsight Compute:

    ncu --kernel-name regex:splitkv_mla --launch-skip 3 --launch-count 1 --section SpeedOfLight \\
        --section WarpStateStats python3 benchmarks/profile_decode.py --b 128 --s-q 2 --h-q 128 --mean 8192

`--seqlens 4641,45118,1730,1696` gives an explicit batch instead (the skewed config).
"""
import argparse

import torch

import mla_backend
from mla_backend.testing import make_decode_inputs, varlen_seqlens

parser = argparse.ArgumentParser()
parser.add_argument("--b", type=int, default=128)
parser.add_argument("--s-q", type=int, default=1)
parser.add_argument("--h-q", type=int, default=16)
parser.add_argument("--mean", type=int, default=8192)
parser.add_argument("--seqlens", help="comma-separated seqlens; overrides --b and --mean")
parser.add_argument("--iters", type=int, default=5)
args = parser.parse_args()

seqlens = ([int(v) for v in args.seqlens.split(",")] if args.seqlens
           else varlen_seqlens(args.b, args.mean, args.s_q, seed=args.mean))
inp = make_decode_inputs(seqlens, args.s_q, args.h_q, device="cuda", seed=1)
tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, args.s_q * args.h_q, 1)
for _ in range(args.iters):
    mla_backend.flash_mla_with_kvcache(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, tsm, splits,
                                       causal=args.s_q > 1, check_seqlens=False)
torch.cuda.synchronize()
