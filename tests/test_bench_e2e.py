"""The run order and the medians of benchmarks/bench_e2e.py (no vLLM needed)."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench_e2e", Path(__file__).resolve().parent.parent
                                               / "benchmarks" / "bench_e2e.py")
bench_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_e2e)


def test_each_backend_goes_first_once_per_rotation():
    order = bench_e2e.run_order(["CUSTOM", "FLASHMLA"], 3)
    assert order == ["CUSTOM", "FLASHMLA", "FLASHMLA", "CUSTOM", "CUSTOM", "FLASHMLA"]
    three = bench_e2e.run_order(["A", "B", "C"], 3)
    assert [three[i] for i in (0, 3, 6)] == ["A", "B", "C"]
    assert sorted(three) == sorted(["A", "B", "C"] * 3)
    assert bench_e2e.run_order(["A", "B"], 1) == ["A", "B"]


def test_medians_per_backend():
    records = [{"backend": b, "output_tok_s": v} for b, v in
               [("CUSTOM", 20089.0), ("FLASHMLA", 21306.0), ("CUSTOM", 21419.0), ("FLASHMLA", 23018.0),
                ("CUSTOM", 15898.0)]]
    assert bench_e2e.medians(records) == {"CUSTOM": 20089.0, "FLASHMLA": 22162.0}


def test_engine_args_carry_the_extra_vllm_arguments():
    parser = bench_e2e.argparse.ArgumentParser()
    bench_e2e.add_workload_args(parser)
    args = parser.parse_args(["--vllm-args", "--max-cudagraph-capture-size 1024 --max-num-seqs 600"])
    assert bench_e2e.engine_args(args) == ["--max-model-len", "4096", "--max-cudagraph-capture-size", "1024",
                                           "--max-num-seqs", "600"]
    assert bench_e2e.engine_args(parser.parse_args([])) == ["--max-model-len", "4096"]
