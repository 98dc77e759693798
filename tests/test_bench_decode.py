"""The timing order of benchmarks/bench_decode.py (no GPU needed)."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench_decode", Path(__file__).resolve().parent.parent
                                               / "benchmarks" / "bench_decode.py")
bench_decode = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_decode)


def test_every_implementation_is_timed_first_in_turn():
    names = ["ours", "flashmla", "fa3_mla"]
    firsts = [bench_decode.impl_order(names, i)[0] for i in range(6)]
    assert firsts == names * 2
    assert all(sorted(bench_decode.impl_order(names, i)) == sorted(names) for i in range(6))
    assert bench_decode.impl_order(["ours"], 5) == ["ours"]
    assert bench_decode.impl_order([], 3) == []
