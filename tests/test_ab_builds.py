"""The run order and summary of benchmarks/ab_builds.py (no GPU needed)."""
from benchmark_scripts import load

ab_builds = load("ab_builds")


def test_builds_take_turns():
    assert ab_builds.run_order(["main", "new"], 2) == [("main", 0), ("new", 0), ("main", 1), ("new", 1)]
    assert ab_builds.run_order(["a", "b", "c"], 1) == [("a", 0), ("b", 0), ("c", 0)]


def test_summary_keeps_every_sample_and_the_mean_change():
    samples = {}
    skewed = dict(b=4, s_q=4, h_q=16, seqlens=[4641, 45118, 1730, 1696])
    sweep = dict(b=128, s_q=5, h_q=16, mean_seqlen=8192)
    for name, us in (("main", 45.1), ("new", 42.8), ("main", 44.9), ("new", 42.7)):
        ab_builds.collect(samples, name, [{"config": skewed, "impl": "ours", "us": us},
                                          {"config": skewed, "impl": "flashmla", "us": 70.0},
                                          {"config": sweep, "impl": "ours", "us": 500.0 if name == "main" else 550.0}])
    lines = ab_builds.summary_lines(samples, ["main", "new"])
    assert lines[0].startswith("b4 s_q4 h16 n4")
    assert "| main 45.1 44.9 | new 42.8 42.7 | new -5.0%" in lines[0]
    assert lines[1].startswith("b128 s_q5 h16 sk8192") and lines[1].endswith("| new +10.0%")


def test_a_build_without_samples_gets_no_change():
    samples = {}
    ab_builds.collect(samples, "main", [{"config": dict(b=1, s_q=1, h_q=16, mean_seqlen=64), "impl": "ours", "us": 9.0}])
    (line,) = ab_builds.summary_lines(samples, ["main", "new"])
    assert line.startswith("b1 s_q1 h16 sk64") and line.endswith("| main 9.0 | new ") and "%" not in line
