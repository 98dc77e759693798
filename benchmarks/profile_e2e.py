#!/usr/bin/env python3
"""Where an end-to-end vLLM step spends its time, per attention backend.

    python benchmarks/profile_e2e.py MODEL_DIR --backend CUSTOM [--delay 150 --iterations 20]
    python benchmarks/profile_e2e.py --summarize TRACE.json.gz
    python benchmarks/profile_e2e.py --compare CUSTOM.json FLASHMLA.json   (summaries written with --json)

Runs bench_e2e's workload (`vllm bench throughput`, random 2048 in / 512 out) with vLLM's torch
profiler on the engine's worker for `--iterations` engine steps after `--delay` steps (past the
prefill ramp, so the window holds full decode steps), then summarizes the worker's trace: the
window's GPU span, how much of it some kernel was running (the rest is the GPU waiting for the
host), and by total time the kernels, host ops, CUDA runtime calls and annotations. Comparing two backends' summaries
(`--compare`) shows whether a gap lies in the attention kernels, elsewhere on the GPU, or on the host,
and which host ops and CUDA runtime calls make it.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_e2e import add_workload_args, engine_args, throughput_cmd


def load_trace(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)["traceEvents"]


def busy_time(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals: kernels on several streams count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


HOST_CATEGORIES = {"cpu_op": "host_ops", "cuda_runtime": "runtime_calls", "cuda_driver": "runtime_calls",
                   "user_annotation": "annotations"}


def summarize(events: list[dict]) -> dict:
    """Times in µs: the kernels' span, the time some kernel ran, and by name, largest total first:
    kernels, host ops (nested ops count in their parents too), CUDA runtime calls, host annotations."""
    kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") == "kernel"]
    if not kernels:
        raise ValueError("the trace holds no GPU kernels (cat 'kernel'): was the worker profiled?")
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in kernels]
    begin, end = min(s for s, _ in spans), max(e for _, e in spans)
    groups: dict[str, dict[str, list[float]]] = {k: collections.defaultdict(list) for k in
                                                 ("kernels", "host_ops", "runtime_calls", "annotations")}
    for e in events:
        if e.get("ph") != "X":
            continue
        group = "kernels" if e.get("cat") == "kernel" else HOST_CATEGORIES.get(e.get("cat"))
        if group:
            groups[group][e["name"]].append(e["dur"])

    def ranked(by_name: dict[str, list[float]]) -> list[dict]:
        rows = [{"name": n, "count": len(d), "total_us": sum(d)} for n, d in by_name.items()]
        return sorted(rows, key=lambda r: -r["total_us"])

    return {"span_us": end - begin, "gpu_busy_us": busy_time(spans), **{k: ranked(v) for k, v in groups.items()}}


def print_summary(s: dict, top: int = 15) -> None:
    busy = s["gpu_busy_us"] / s["span_us"]
    print(f"GPU span {s['span_us'] / 1e3:.2f} ms, some kernel running {s['gpu_busy_us'] / 1e3:.2f} ms ({busy:.1%})")
    print(f"{'kernel':<90} {'count':>6} {'total ms':>9} {'share':>6}")
    for r in s["kernels"][:top]:
        print(f"{r['name'][:90]:<90} {r['count']:>6} {r['total_us'] / 1e3:>9.2f} "
              f"{r['total_us'] / s['gpu_busy_us']:>6.1%}")
    for group in ("annotations", "host_ops", "runtime_calls"):
        if s.get(group):
            print(f"\n{group:<90} {'count':>6} {'total ms':>9} {'mean us':>8}")
            for r in s[group][:top]:
                print(f"{r['name'][:90]:<90} {r['count']:>6} {r['total_us'] / 1e3:>9.2f} "
                      f"{r['total_us'] / r['count']:>8.1f}")


def compare(a: dict, b: dict, top: int = 12) -> list[tuple[str, str, float, float]]:
    """(group, name, a's total µs, b's total µs), largest difference first within each group."""
    rows = []
    for group in ("kernels", "annotations", "host_ops", "runtime_calls"):
        ta = {r["name"]: r["total_us"] for r in a.get(group, [])}
        tb = {r["name"]: r["total_us"] for r in b.get(group, [])}
        diffs = sorted(ta.keys() | tb.keys(), key=lambda n: -abs(ta.get(n, 0.0) - tb.get(n, 0.0)))
        rows += [(group, n, ta.get(n, 0.0), tb.get(n, 0.0)) for n in diffs[:top]]
    return rows


def print_comparison(a: dict, b: dict) -> None:
    print(f"span ms {a['span_us'] / 1e3:.2f} vs {b['span_us'] / 1e3:.2f}, "
          f"GPU busy ms {a['gpu_busy_us'] / 1e3:.2f} vs {b['gpu_busy_us'] / 1e3:.2f}")
    print(f"{'group':<14} {'name':<80} {'A ms':>8} {'B ms':>8} {'A-B ms':>8}")
    for group, name, ta, tb in compare(a, b):
        print(f"{group:<14} {name[:80]:<80} {ta / 1e3:>8.2f} {tb / 1e3:>8.2f} {(ta - tb) / 1e3:>8.2f}")


def profile(args) -> Path:
    trace_dir = Path(tempfile.mkdtemp(prefix="vllm_prof_")) if args.trace_dir is None else Path(args.trace_dir)
    config = {"profiler": "torch", "torch_profiler_dir": str(trace_dir.resolve()), "torch_profiler_with_stack": False,
              "ignore_frontend": True, "delay_iterations": args.delay, "max_iterations": args.iterations}
    cmd = throughput_cmd(args.model, args.backend, 1, args.input_len, args.output_len, args.num_prompts,
                         [*engine_args(args), "--profile", "--profiler-config", json.dumps(config)])
    print("$ " + " ".join(cmd), flush=True)
    # vLLM's log goes straight through to stderr: a run cut short by a time limit still shows how far it got.
    proc = subprocess.run(cmd, stdout=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"vllm bench throughput --profile failed for {args.backend} (exit {proc.returncode}): "
                           "its log is above")
    traces = sorted(trace_dir.rglob("*.json*"), key=os.path.getsize)
    if not traces:
        raise RuntimeError(f"no trace written under {trace_dir}")
    return traces[-1]  # the worker's trace holds the kernels and is the largest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--backend", default="CUSTOM")
    parser.add_argument("--summarize", type=Path, help="summarize this trace instead of running vLLM")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                        help="compare two summaries written with --json, largest differences first")
    parser.add_argument("--trace-dir")
    parser.add_argument("--delay", type=int, default=150, help="engine steps before the profiled window")
    parser.add_argument("--iterations", type=int, default=20, help="engine steps profiled")
    add_workload_args(parser)
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args()
    if args.compare:
        print_comparison(*(json.load(open(p)) for p in args.compare))
        return
    if args.summarize is None and args.model is None:
        parser.error("give MODEL_DIR to profile, --summarize TRACE or --compare A.json B.json")
    trace = args.summarize or profile(args)
    print(f"# {trace}")
    summary = summarize(load_trace(trace))
    print_summary(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
