#!/usr/bin/env python3
"""The card's own reference rates, and issue #4's absolute targets scaled to them:

    python3 benchmarks/card_rates.py

Issue #4 states its absolute targets on an H100 against that card's reference rates: h16 s_q1
sk16384 at >= 2.85 TB/s where a device-to-device copy measured 3.0 TB/s, and h128 s_q2 sk8192
at >= 620 TFLOPS where a bf16 matmul measured 783. On another card (an H200: faster HBM, the
same tensor cores, a 700 W cap) those numbers mean nothing; the same fractions of its own rates
do. Each rate is a `do_bench` median (warm, L2 flushed), and the matmul is also run back to
back for a few seconds, as a decode call runs under load at the card's power cap.
"""
from __future__ import annotations

import argparse
import time

import torch
from triton.testing import do_bench

COPY_TARGET, COPY_REF = 2.85e12, 3.0e12  # issue #4: B/s of h16 s_q1 sk16384, H100 copy
MATMUL_TARGET, MATMUL_REF = 620e12, 783e12  # issue #4: FLOP/s of h128 s_q2 sk8192, H100 matmul


def copy_rate(gib: float) -> float:
    """Bytes read and written per second by a device-to-device copy of `gib` GiB."""
    src = torch.empty(int(gib * 2**30), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() / (ms * 1e-3)


def matmul_rate(n: int, sustained_s: float) -> tuple[float, float]:
    """FLOP/s of an n³ bf16 matmul: do_bench's median, and the mean over sustained_s seconds
    of back-to-back calls."""
    a, b = (torch.randn(n, n, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    flops = 2 * n**3
    ms = do_bench(lambda: a @ b, return_mode="median")
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < sustained_s:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        calls += 20
    return flops / (ms * 1e-3), flops * calls / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copy-gib", type=float, default=1.5)
    parser.add_argument("--matmul-n", type=int, default=8192)
    parser.add_argument("--sustained-s", type=float, default=3.0)
    args = parser.parse_args()

    print(f"# {torch.cuda.get_device_name()}")
    copy = copy_rate(args.copy_gib)
    peak, sustained = matmul_rate(args.matmul_n, args.sustained_s)
    print(f"device copy        {copy / 1e9:8.0f} GB/s  -> memory-bound target "
          f"{copy * COPY_TARGET / COPY_REF / 1e9:.0f} GB/s ({COPY_TARGET / COPY_REF:.3f} of it)")
    for name, rate in (("bf16 matmul", peak), ("matmul, sustained", sustained)):
        print(f"{name:<18} {rate / 1e12:8.0f} TFLOPS -> compute-bound target "
              f"{rate * MATMUL_TARGET / MATMUL_REF / 1e12:.0f} TFLOPS ({MATMUL_TARGET / MATMUL_REF:.3f} of it)")


if __name__ == "__main__":
    main()
