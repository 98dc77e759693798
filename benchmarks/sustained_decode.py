#!/usr/bin/env python3
"""One decode config under sustained load: each implementation loops alone for a few seconds
while `nvidia-smi` samples the SM clock and the board power.

    python benchmarks/sustained_decode.py --b 128 --s-q 2 --h-q 128 --mean 8192 [--only ours,flashmla]
                                          [--seconds 3] [--repeats 2]

bench_decode.py times short bursts with the L2 flushed between calls; a card held at its power
cap (the H200 at 700 W) clocks down under a longer load, and by how much depends on the kernel.
This prints each window's time per call beside the median clock and power within it, so that
a kernel needing fewer cycles can be told from one running at a higher clock.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import time

import torch

from bench_decode import add_config_args, available_impls, config_seqlens  # this folder, on sys.path as a script
from mla_backend.testing import make_decode_inputs

SMI_QUERY = ["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw", "--format=csv,noheader,nounits", "-lms", "100"]
SMI_TIME_FORMAT = "%Y/%m/%d %H:%M:%S.%f"
SETTLE = datetime.timedelta(seconds=0.5)  # the clock's first samples in a window belong to the one before


def parse_samples(lines: list[str]) -> list[tuple[datetime.datetime, float, float]]:
    """(time, SM clock MHz, power W) of each well-formed `nvidia-smi` line; others are skipped."""
    samples = []
    for line in lines:
        try:
            stamp, clock, power = (field.strip() for field in line.split(","))
            samples.append((datetime.datetime.strptime(stamp, SMI_TIME_FORMAT), float(clock), float(power)))
        except ValueError:
            continue
    return samples


def window_medians(samples, begin: datetime.datetime, end: datetime.datetime) -> tuple[float, float, int]:
    """Median clock and power of the samples in [begin + SETTLE, end], and their count."""
    inside = [s for s in samples if begin + SETTLE <= s[0] <= end]
    if not inside:
        return float("nan"), float("nan"), 0
    return statistics.median(s[1] for s in inside), statistics.median(s[2] for s in inside), len(inside)


def loop_for(fn, seconds: float, calls_per_sync: int = 20) -> float:
    """Calls fn back to back for about `seconds`; returns µs per call."""
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(calls_per_sync):
            fn()
        torch.cuda.synchronize()
        calls += calls_per_sync
    return (time.perf_counter() - start) / calls * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--only", default="ours,flashmla")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    seqlens = config_seqlens(args)
    inp = make_decode_inputs(seqlens, args.s_q, args.h_q, device="cuda", seed=1)
    fns = {name: make(inp, args.s_q, args.h_q, args.s_q > 1) for name, make in available_impls(args.only).items()}
    smi = subprocess.Popen(SMI_QUERY, stdout=subprocess.PIPE, text=True)
    windows = []
    try:
        for _ in range(args.repeats):
            for name, fn in fns.items():
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
                begin = datetime.datetime.now()
                us = loop_for(fn, args.seconds)
                windows.append((name, us, begin, datetime.datetime.now()))
    finally:
        smi.terminate()
    samples = parse_samples(smi.stdout.read().splitlines())
    print(f"# {torch.cuda.get_device_name()} | b{len(seqlens)} s_q{args.s_q} h{args.h_q} | {args.seconds} s a window")
    for name, us, begin, end in windows:
        clock, power, count = window_medians(samples, begin, end)
        print(f"{name:<10} {us:9.1f} us/call  SM clock {clock:6.0f} MHz  power {power:5.0f} W  ({count} samples)")


if __name__ == "__main__":
    main()
