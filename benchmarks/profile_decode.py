#!/usr/bin/env python3
"""One decode config, for Nsight Compute:

    ncu --kernel-name regex:splitkv_mla --launch-skip 3 --launch-count 1 --section SpeedOfLight \\
        --section WarpStateStats python3 benchmarks/profile_decode.py --b 128 --s-q 2 --h-q 128 --mean 8192

`--seqlens 4641,45118,1730,1696` gives an explicit batch instead (the skewed config).
`--impl flashmla` (or any other name of bench_decode.py's) runs that peer on the same inputs, so
that both kernels can be read with the same counters, e.g. cycles at `--clock-control base`.
"""
import argparse

import torch

from bench_decode import IMPLS, add_config_args, config_seqlens
from mla_backend.testing import make_decode_inputs

parser = argparse.ArgumentParser()
add_config_args(parser)
parser.add_argument("--iters", type=int, default=5)
parser.add_argument("--impl", choices=list(IMPLS), default="ours")
args = parser.parse_args()

inp = make_decode_inputs(config_seqlens(args), args.s_q, args.h_q, device="cuda", seed=1)
run = IMPLS[args.impl](inp, args.s_q, args.h_q, args.s_q > 1)
for _ in range(args.iters):
    run()
torch.cuda.synchronize()
