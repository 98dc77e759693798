"""The trace summary of benchmarks/profile_e2e.py, on a synthetic torch-profiler trace."""
import gzip
import importlib.util
import json
from pathlib import Path

import sys

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # profile_e2e imports bench_e2e, as when run as a script
_spec = importlib.util.spec_from_file_location("profile_e2e", BENCHMARKS / "profile_e2e.py")
profile_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_e2e)


def kernel(name, ts, dur):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur}


def test_busy_time_counts_overlap_once():
    assert profile_e2e.busy_time([(0, 10), (5, 15), (20, 30), (22, 25)]) == 25
    assert profile_e2e.busy_time([(20, 30), (0, 10)]) == 20
    assert profile_e2e.busy_time([]) == 0


def test_summary_of_a_trace(tmp_path):
    events = [
        kernel("mla::splitkv_mla_kernel", 100, 50), kernel("mla::combine_kernel", 140, 20),  # overlaps by 10
        kernel("mla::splitkv_mla_kernel", 300, 50), kernel("gemm", 200, 40),
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 1000},
        {"ph": "X", "cat": "user_annotation", "name": "execute_model", "ts": 90, "dur": 120},
        {"ph": "X", "cat": "user_annotation", "name": "execute_model", "ts": 290, "dur": 80},
        {"ph": "i", "cat": "kernel", "name": "instant, not a span", "ts": 500},
    ]
    path = tmp_path / "worker.pt.trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    s = profile_e2e.summarize(profile_e2e.load_trace(path))
    assert s["span_us"] == 250 and s["gpu_busy_us"] == 150
    assert [(k["name"], k["count"], k["total_us"]) for k in s["kernels"]] == [
        ("mla::splitkv_mla_kernel", 2, 100), ("gemm", 1, 40), ("mla::combine_kernel", 1, 20)]
    assert s["annotations"] == [{"name": "execute_model", "count": 2, "total_us": 200}]
    profile_e2e.print_summary(s)


def test_trace_without_kernels_is_an_error():
    with pytest.raises(ValueError, match="no GPU kernels"):
        profile_e2e.summarize([{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 1}])
