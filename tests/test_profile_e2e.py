"""The trace summary of benchmarks/profile_e2e.py, on a synthetic torch-profiler trace."""
import gzip
import json

import pytest

from benchmark_scripts import load

profile_e2e = load("profile_e2e")  # it imports bench_e2e, as when run as a script


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
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 2000, "dur": 500},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 10, "dur": 4},
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
    assert s["host_ops"] == [{"name": "aten::mm", "count": 2, "total_us": 1500}]
    assert s["runtime_calls"] == [{"name": "cudaLaunchKernel", "count": 1, "total_us": 4}]
    profile_e2e.print_summary(s)


def test_comparison_ranks_the_largest_differences_first():
    a = {"kernels": [{"name": "k", "total_us": 10}], "host_ops": [{"name": "x", "total_us": 5},
                                                                  {"name": "y", "total_us": 50}]}
    b = {"kernels": [{"name": "k", "total_us": 12}], "host_ops": [{"name": "x", "total_us": 45},
                                                                  {"name": "z", "total_us": 20}]}
    assert profile_e2e.compare(a, b) == [("kernels", "k", 10, 12), ("host_ops", "y", 50, 0.0),
                                         ("host_ops", "x", 5, 45), ("host_ops", "z", 0.0, 20)]


def test_trace_without_kernels_is_an_error():
    with pytest.raises(ValueError, match="no GPU kernels"):
        profile_e2e.summarize([{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 1}])
