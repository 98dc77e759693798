"""The timing order of benchmarks/bench_decode.py (no GPU needed)."""
import pytest
import torch
from benchmark_scripts import load

bench_decode = load("bench_decode")


@pytest.fixture
def on_cpu(monkeypatch):
    """bench_config without a GPU: inputs on the CPU, no cache to empty."""
    real_inputs = bench_decode.make_decode_inputs
    monkeypatch.setattr(bench_decode, "make_decode_inputs", lambda *a, **k: real_inputs(*a, **{**k, "device": "cpu"}))
    monkeypatch.setattr(bench_decode.torch.cuda, "empty_cache", lambda: None)


def test_every_implementation_is_timed_first_in_turn():
    names = ["ours", "flashmla", "fa3_mla"]
    firsts = [bench_decode.impl_order(names, i)[0] for i in range(6)]
    assert firsts == names * 2
    assert all(sorted(bench_decode.impl_order(names, i)) == sorted(names) for i in range(6))
    assert bench_decode.impl_order(["ours"], 5) == ["ours"]
    assert bench_decode.impl_order([], 3) == []


def test_bench_config_takes_medians_over_rotated_rounds(on_cpu, monkeypatch, capsys):
    calls = []
    fake_ms = {"ours": [0.10, 0.30, 0.20], "peer": [0.40, 0.20, 0.30]}

    def fake_do_bench(fn, **kwargs):
        name = fn()
        calls.append(name)
        return fake_ms[name][sum(c == name for c in calls) - 1]

    monkeypatch.setattr(bench_decode.triton.testing, "do_bench", fake_do_bench)

    def failing(inp, s_q, h_q, causal, apart=None):
        raise RuntimeError("not built for this card")

    impls = {"ours": lambda *a: (lambda: "ours"), "peer": lambda *a: (lambda: "peer"), "broken": failing}
    records = []
    config = dict(b=2, s_q=1, h_q=16, seqlens=[100, 64], varlen=True)
    bench_decode.bench_config(config, impls, records, index=1, rounds=3)
    assert calls == ["peer", "ours", "ours", "peer", "peer", "ours"]  # rotated from index 1
    us = {r["impl"]: r["us"] for r in records}
    assert us == {"ours": 200.0, "peer": 300.0}
    assert "x1.50" in capsys.readouterr().out


def test_config_arguments_name_the_seqlens():
    parser = bench_decode.argparse.ArgumentParser()
    bench_decode.add_config_args(parser)
    args = parser.parse_args(["--b", "64", "--s-q", "3", "--mean", "4096"])
    assert bench_decode.config_seqlens(args) == bench_decode.varlen_seqlens(64, 4096, 3, seed=4096)
    assert bench_decode.config_seqlens(parser.parse_args(["--seqlens", "4641,45118,0"])) == [4641, 45118, 0]
    e2e_b64 = next(c["seqlens"] for c in bench_decode.e2e_shape_configs() if c["b"] == 64)
    assert bench_decode.config_seqlens(parser.parse_args(["--e2e-batch", "64", "--b", "7"])) == e2e_b64


def test_match_selects_configs_by_their_printed_description():
    every = bench_decode.selected_configs("all", sq_sweep=True)
    assert len(every) == 24 + 1 + 16 - 4  # the sweep's s_q 1 and 2 at sk8192 are FlashMLA configs
    assert len({bench_decode.describe(c) for c in every}) == len(every)
    tensor_bound = bench_decode.selected_configs("flashmla", match=r"s_q2 h128 ")
    assert [c["mean_seqlen"] for c in tensor_bound] == [4096, 8192, 16384]
    assert all(c["s_q"] == 2 and c["h_q"] == 128 for c in tensor_bound)
    skewed = bench_decode.selected_configs("all", match="seqlens=")
    assert [c["b"] for c in skewed] == [4]
    assert bench_decode.selected_configs("e2e", match="^b600 ")[0]["b"] == 600
    shard = bench_decode.selected_configs("e2e", e2e_heads=16)
    assert [c["h_q"] for c in shard] == [16] * 4
    assert [c["seqlens"] for c in shard] == [c["seqlens"] for c in bench_decode.e2e_shape_configs()]
    assert bench_decode.selected_configs("flashmla", match="no such config") == []


def test_graph_layers_time_the_graph_not_single_calls(on_cpu, monkeypatch, capsys):
    graphed = []

    def fake_graph_layer_us(fn, q, layers):
        name = fn()
        if name == "uncapturable":
            raise RuntimeError("operation not permitted when stream is capturing")
        graphed.append((name, tuple(q.shape), layers))
        return 0.5 if name == "ours" else 0.75

    def no_do_bench(fn, **kwargs):
        raise AssertionError("single calls timed in graph mode")

    monkeypatch.setattr(bench_decode, "graph_layer_us", fake_graph_layer_us)
    monkeypatch.setattr(bench_decode.triton.testing, "do_bench", no_do_bench)

    impls = {"ours": lambda *a: (lambda: "ours"), "peer": lambda *a: (lambda: "peer"),
             "uncapturable": lambda *a: (lambda: "uncapturable")}
    records = []
    config = dict(b=2, s_q=2, h_q=16, seqlens=[100, 64], varlen=True)
    bench_decode.bench_config(config, impls, records, rounds=2, graph_layers=16)
    assert sorted(graphed) == [("ours", (2, 2, 16, 576), 16)] * 2 + [("peer", (2, 2, 16, 576), 16)] * 2
    assert "uncapturable failed in a CUDA graph" in capsys.readouterr().err
    assert {r["impl"]: (r["us"], r["l2"]) for r in records} == {"ours": (0.5, "graph16"), "peer": (0.75, "graph16")}


def test_engine_query_lays_q_out_as_vllm_hands_it_over():
    q = torch.randn(3, 2, 5, 576).to(torch.bfloat16)
    latent, rope = bench_decode.engine_query(q)
    assert torch.equal(torch.cat((latent, rope), dim=-1), q)
    assert latent.stride() == (2 * 512, 512, 3 * 2 * 512, 1)  # a transposed [h_q, tokens, 512] bmm output
    assert rope.stride() == (2 * 5 * 192, 5 * 192, 192, 1)  # the rope slice of the [tokens, h_q, 192] projection


def test_q_apart_hands_every_implementation_the_engine_layout(on_cpu, monkeypatch):
    monkeypatch.setattr(bench_decode, "median_us", lambda fn, l2: 10.0)
    given = {}

    def recording(name):
        def make(inp, s_q, h_q, causal, apart=None):
            given[name] = (inp.q, apart)
            return lambda: None
        return make

    records = []
    config = dict(b=2, s_q=1, h_q=16, seqlens=[100, 64], varlen=True)
    bench_decode.bench_config(config, {"ours": recording("ours"), "peer": recording("peer")}, records, q_apart=True)
    for q, (latent, rope) in given.values():
        assert torch.equal(torch.cat((latent, rope), dim=-1), q) and not latent.is_contiguous()
    assert [r["q"] for r in records] == ["apart", "apart"]
    bench_decode.bench_config(config, {"ours": recording("ours")}, records)
    assert given["ours"][1] is None and "q" not in records[-1]
