#!/usr/bin/env python3
"""SM clock and board power under sustained decode calls, ours beside the peers:

    python benchmarks/power_decode.py [--only ours,flashmla] [--configs flashmla] [--match REGEX] [--seconds 2.5]

The H200 runs these kernels at its software power cap, where the SM clock, not only the pages or
the tensor pipe, sets their pace (kernels/DESIGN.md, "Twelfth session"). Each implementation
calls its config back to back for --seconds (after a warm-up as long) while nvidia-smi samples
power and SM clock every 50 ms; the line gives µs per call, the median clock and power over the
timed window, and the energy of a call (median power × time per call). Back-to-back calls do
not flush L2 between them, unlike bench_decode.py.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import torch

from bench_decode import available_impls, describe, impl_order, seqlens_of, selected_configs
from mla_backend.testing import make_decode_inputs

SAMPLE_MS = 50


def run_for(fn, seconds: float) -> float:
    """Calls fn back to back for `seconds` of host time; returns µs per call on the GPU."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls = 0
    start.record()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(8):
            fn()
        calls += 8
        torch.cuda.synchronize()  # keeps the queue short, so the samples cover the GPU's work
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / calls


def sustained(fn, seconds: float) -> dict:
    run_for(fn, seconds)  # warm-up: the clock settles at the cap
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=power.draw,clocks.sm", "--format=csv,noheader,nounits",
                            "-lms", str(SAMPLE_MS)], stdout=subprocess.PIPE, text=True)
    us = run_for(fn, seconds)
    smi.terminate()
    out, _ = smi.communicate()
    samples = [[float(v) for v in line.split(",")] for line in out.splitlines() if line.count(",") == 1]
    watts = statistics.median(s[0] for s in samples)
    return {"us": us, "mhz": statistics.median(s[1] for s in samples), "w": watts, "mj": watts * us * 1e-3,
            "samples": len(samples)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="ours,flashmla")
    parser.add_argument("--configs", default="flashmla", choices=["all", "flashmla", "skewed", "e2e"])
    parser.add_argument("--match")
    parser.add_argument("--seconds", type=float, default=2.5)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    impls = available_impls(args.only)
    for index, config in enumerate(selected_configs(args.configs, match=args.match)):
        s_q, h_q = config["s_q"], config["h_q"]
        inp = make_decode_inputs(seqlens_of(config), s_q, h_q, device="cuda", seed=1)
        fns = {name: make(inp, s_q, h_q, s_q > 1) for name, make in impls.items()}
        for r in range(args.rounds):
            stats = {name: sustained(fns[name], args.seconds) for name in impl_order(list(fns), index + r)}
            line = f"{describe(config):<24}"
            for name, st in stats.items():
                line += (f" | {name} {st['us']:8.1f} us {st['mhz']:5.0f} MHz {st['w']:4.0f} W {st['mj']:6.2f} mJ"
                         f" (n{st['samples']})")
            if "ours" in stats:
                for name, st in stats.items():
                    if name != "ours":
                        line += f" | {name}/ours time x{st['us'] / stats['ours']['us']:.3f}"
                        line += f" energy x{st['mj'] / stats['ours']['mj']:.3f}"
            print(line, flush=True)
        del inp, fns
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
