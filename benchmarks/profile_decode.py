#!/usr/bin/env python3
"""One decode config, for Nsight Compute:

    ncu --kernel-name regex:splitkv_mla --launch-skip 3 --launch-count 1 --section SpeedOfLight \\
        --section WarpStateStats python3 benchmarks/profile_decode.py --b 128 --s-q 2 --h-q 128 --mean 8192

`--seqlens 4641,45118,1730,1696` gives an explicit batch instead (the skewed config).
"""
import argparse

import torch

import mla_backend
from bench_decode import add_config_args, config_seqlens
from mla_backend.testing import make_decode_inputs

parser = argparse.ArgumentParser()
add_config_args(parser)
parser.add_argument("--iters", type=int, default=5)
args = parser.parse_args()

inp = make_decode_inputs(config_seqlens(args), args.s_q, args.h_q, device="cuda", seed=1)
tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, args.s_q * args.h_q, 1)
for _ in range(args.iters):
    mla_backend.flash_mla_with_kvcache(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, tsm, splits,
                                       causal=args.s_q > 1, check_seqlens=False)
torch.cuda.synchronize()
