"""The run order, the samples and the medians of benchmarks/bench_e2e.py (no vLLM needed)."""
import pytest
from benchmark_scripts import load

bench_e2e = load("bench_e2e")


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


def test_ratio_of_means_and_its_interval():
    ratio, two_se = bench_e2e.ratio_of_means([100.0, 110.0], [100.0, 100.0])
    assert ratio == 1.05
    # Only ours varies: cv = stdev / mean = 7.071 / 105, over 2 runs.
    assert abs(two_se - 2 * 1.05 * (7.0710678 / 105) / 2 ** 0.5) < 1e-6
    assert bench_e2e.ratio_of_means([100.0], [80.0]) == (1.25, None)


def test_summarize_saved_records(tmp_path, capsys, monkeypatch):
    runs = [("FLASHMLA", 18583.7), ("CUSTOM", 19940.0), ("CUSTOM", 21672.8), ("FLASHMLA", 21101.1)]
    path = tmp_path / "r.json"
    path.write_text(bench_e2e.json.dumps([{"backend": b, "output_tok_s": v} for b, v in runs]))
    monkeypatch.setattr(bench_e2e.sys, "argv", ["bench_e2e.py", "--summarize", str(path)])
    bench_e2e.main()
    out = capsys.readouterr().out
    flashmla_row = next(line for line in out.splitlines() if line.startswith("FLASHMLA "))
    medians_ratio = (19940.0 + 21672.8) / (18583.7 + 21101.1)
    assert flashmla_row.split()[1:3] == ["2", "19842.4"] and "18584..21101" in flashmla_row
    assert f"{medians_ratio:.3f}," in flashmla_row
    assert "±" in flashmla_row


def test_records_are_saved_after_every_run(tmp_path, monkeypatch):
    path = tmp_path / "e2e.json"
    done = []

    def fake_run(model, backend, *args):
        if len(done) == 2:
            raise RuntimeError("the call ran out of time")
        done.append(backend)
        return {"backend": backend, "output_tok_s": 100.0 + len(done)}

    monkeypatch.setattr(bench_e2e, "run_throughput", fake_run)
    monkeypatch.setattr(bench_e2e.sys, "argv", ["bench_e2e.py", "MODEL", "--backends", "CUSTOM,FLASHMLA",
                                                "--repeats", "2", "--no-warmup", "--json", str(path)])
    with pytest.raises(RuntimeError):
        bench_e2e.main()
    assert bench_e2e.json.loads(path.read_text()) == [{"backend": "CUSTOM", "output_tok_s": 101.0},
                                                       {"backend": "FLASHMLA", "output_tok_s": 102.0}]


def test_rounds_of_one_engine_are_one_sample():
    rounds = [("CUSTOM", 0, 100.0), ("CUSTOM", 0, 110.0), ("FLASHMLA", 1, 90.0), ("FLASHMLA", 1, 96.0),
              ("CUSTOM", 2, 120.0)]
    records = [{"backend": b, "engine": e, "round": i, "output_tok_s": v} for i, (b, e, v) in enumerate(rounds)]
    assert bench_e2e.samples_by_backend(records) == {"CUSTOM": [105.0, 120.0], "FLASHMLA": [93.0]}
    assert bench_e2e.medians(records) == {"CUSTOM": 112.5, "FLASHMLA": 93.0}


def test_engines_of_saved_files_stay_apart(tmp_path):
    calls = [[("CUSTOM", 0, 100.0), ("CUSTOM", 0, 110.0), ("FLASHMLA", 1, 90.0)],
             [("FLASHMLA", 0, 80.0), ("CUSTOM", 1, 120.0)]]
    paths = []
    for i, rounds in enumerate(calls):
        paths.append(tmp_path / f"call{i}.json")
        paths[-1].write_text(bench_e2e.json.dumps([{"backend": b, "engine": e, "output_tok_s": v} for b, e, v in rounds]))
    records = bench_e2e.load_records([str(p) for p in paths])
    assert [r["engine"] for r in records] == [0, 0, 1, 2, 3]
    assert bench_e2e.samples_by_backend(records) == {"CUSTOM": [105.0, 120.0], "FLASHMLA": [90.0, 80.0]}


def test_runs_and_engines_of_saved_files_stay_apart(tmp_path):
    whole_runs = tmp_path / "runs.json"  # `vllm bench throughput` runs carry no engine
    whole_runs.write_text(bench_e2e.json.dumps([{"backend": "FLASHMLA", "output_tok_s": 90.0},
                                                {"backend": "CUSTOM", "output_tok_s": 99.0}]))
    rounds = tmp_path / "rounds.json"
    rounds.write_text(bench_e2e.json.dumps([{"backend": "FLASHMLA", "engine": 0, "output_tok_s": 100.0},
                                            {"backend": "CUSTOM", "engine": 1, "output_tok_s": 104.0}]))
    records = bench_e2e.load_records([str(whole_runs), str(rounds)])
    assert bench_e2e.samples_by_backend(records) == {"FLASHMLA": [90.0, 100.0], "CUSTOM": [99.0, 104.0]}
    assert bench_e2e.ratios_by_call(records, "CUSTOM", "FLASHMLA") == [1.1, 1.04]


def test_ratios_within_calls_and_their_geometric_mean():
    records = [{"backend": b, "engine": e, "call": c, "output_tok_s": v} for b, e, c, v in
               [("CUSTOM", 0, 0, 110.0), ("CUSTOM", 0, 0, 130.0), ("FLASHMLA", 1, 0, 100.0),
                ("FLASHMLA", 2, 1, 200.0), ("CUSTOM", 3, 1, 180.0), ("CUSTOM", 4, 2, 50.0)]]
    assert bench_e2e.ratios_by_call(records, "CUSTOM", "FLASHMLA") == [1.2, 0.9]  # call 2 has no peer
    mean, factor = bench_e2e.geometric_mean_and_two_se([1.2, 0.9])
    assert abs(mean - (1.2 * 0.9) ** 0.5) < 1e-12
    # logs 0.1823 and -0.1054: stdev 0.2035, over 2 ratios
    assert abs(factor - bench_e2e.math.exp(2 * 0.20345 / 2 ** 0.5)) < 1e-4
    assert bench_e2e.geometric_mean_and_two_se([1.1]) == (1.1, None)


def test_a_round_only_one_engine_finished_is_left_out_of_the_ratio():
    # Engines taking turns, the call cut short in round 1 after CUSTOM's turn: the ratio is round 0's.
    runs = [("FLASHMLA", 0, 0, 90.0), ("CUSTOM", 1, 0, 99.0), ("CUSTOM", 1, 1, 120.0)]
    records = [{"backend": b, "engine": e, "round": r, "output_tok_s": v} for b, e, r, v in runs]
    [(ratio, first)] = bench_e2e.calls_with_both(records, "CUSTOM", "FLASHMLA")
    assert abs(ratio - 1.1) < 1e-12 and first == "FLASHMLA"
    # Both rounds complete: each backend's mean over both.
    records.append({"backend": "FLASHMLA", "engine": 0, "round": 1, "output_tok_s": 110.0})
    assert abs(bench_e2e.ratios_by_call(records, "CUSTOM", "FLASHMLA")[0] - 109.5 / 100.0) < 1e-12


def test_phase_ratios_split_each_call_into_its_decode_phase_and_the_rest():
    runs = [("FLASHMLA", 0, 0, 34.0, 18.0), ("CUSTOM", 1, 0, 32.0, 16.0),
            ("CUSTOM", 1, 1, 31.0, 15.0), ("FLASHMLA", 0, 1, 35.0, 18.0), ("CUSTOM", 1, 2, 40.0, 20.0)]
    records = [{"backend": b, "engine": e, "round": r, "elapsed_s": t, "decode_phase_s": d, "output_tok_s": 1e4 / t}
               for b, e, r, t, d in runs]
    [(decode, rest)] = bench_e2e.phase_ratios_by_call(records, "CUSTOM", "FLASHMLA")  # round 2 has no peer
    assert abs(decode - 18.0 / 15.5) < 1e-12 and abs(rest - 16.5 / 16.0) < 1e-12
    assert "FLASHMLA's seconds / ours within each call, decode phase: 1.161; the rest (prefill ramp): 1.031" \
        in bench_e2e.summary(records)
    records[0]["decode_phase_s"] = None  # an engine that kept no request timestamps: no split for its call
    assert bench_e2e.phase_ratios_by_call(records, "CUSTOM", "FLASHMLA") == []


def test_order_balanced_weighs_both_orders_alike():
    # Three calls with CUSTOM first (ratios 1.2, 1.2, 1.2), one with FLASHMLA first (0.9): the plain
    # geometric mean leans to the order run more often, the order-balanced one does not.
    runs = [(0, "CUSTOM", 120.0), (0, "FLASHMLA", 100.0), (1, "CUSTOM", 120.0), (1, "FLASHMLA", 100.0),
            (2, "FLASHMLA", 100.0), (2, "CUSTOM", 90.0), (3, "CUSTOM", 60.0), (3, "FLASHMLA", 50.0)]
    records = [{"backend": b, "call": c, "output_tok_s": v} for c, b, v in runs]
    assert [f for _, f in bench_e2e.calls_with_both(records, "CUSTOM", "FLASHMLA")] == \
        ["CUSTOM", "CUSTOM", "FLASHMLA", "CUSTOM"]
    ours_first, peer_first, balanced = bench_e2e.order_balanced(records, "CUSTOM", "FLASHMLA")
    assert abs(ours_first - 1.2) < 1e-12 and abs(peer_first - 0.9) < 1e-12
    assert abs(balanced - (1.2 * 0.9) ** 0.5) < 1e-12
    assert bench_e2e.order_balanced(records[:4], "CUSTOM", "FLASHMLA") is None  # one order only
    assert "order-balanced 1.039" in bench_e2e.summary(records)


def test_engines_take_turns_in_an_order_rotated_each_round():
    e2e_rounds = load("e2e_rounds")
    assert e2e_rounds.rotated(["CUSTOM", "FLASHMLA"], 0) == [(0, "CUSTOM"), (1, "FLASHMLA")]
    assert e2e_rounds.rotated(["CUSTOM", "FLASHMLA"], 1) == [(1, "FLASHMLA"), (0, "CUSTOM")]
    firsts = [e2e_rounds.rotated(["A", "B", "C"], r)[0] for r in range(3)]
    assert firsts == [(0, "A"), (1, "B"), (2, "C")]
    assert e2e_rounds.rotated(["A"], 5) == [(0, "A")]


def test_round_phases_read_the_engine_timestamps_against_the_start():
    e2e_rounds = load("e2e_rounds")

    def output(queued, first_token, last_token):
        metrics = type("Stats", (), {"queued_ts": queued, "first_token_ts": first_token, "last_token_ts": last_token})
        return type("Output", (), {"metrics": metrics})

    # Started at 100.0; three requests queued by 100.4; first tokens at 101, 101.5 and (after a
    # stall) 104; the last token of all at 110.
    outputs = [output(100.1, 101.0, 109.0), output(100.4, 104.0, 110.0), output(100.2, 101.5, 108.0)]
    decode_phase, handover, wait = e2e_rounds.round_phases(outputs, 100.0)
    assert abs(decode_phase - 6.0) < 1e-12 and abs(handover - 0.4) < 1e-12 and abs(wait - 2.5) < 1e-12
    outputs[0].metrics.queued_ts = 0.0  # an engine that did not record the queueing: no hand-over
    assert e2e_rounds.round_phases(outputs, 100.0)[1:] == (None, 2.5)
    outputs[1].metrics = None  # stats off: nothing to read
    assert e2e_rounds.round_phases(outputs, 100.0) == (None, None, None)
    record = {"backend": "CUSTOM", "engine": 0, "round": 2, "elapsed_s": 12.0, "decode_phase_s": 6.0,
              "handover_s": 0.4, "first_token_wait_s": 2.5, "output_tok_s": 1.0}
    assert bench_e2e.round_note(record) == \
        "   engine 0 round 2, ramp 6.0 s (prompts handed over in 0.4 s, longest wait for a first token 2.5 s)"


def test_turn_pairs_are_the_rounds_served_back_to_back():
    # Call 0: engines one after the other (rounds 0 of each are not adjacent), call 1: taking turns,
    # the second round cut after CUSTOM's turn.
    runs = [(0, "CUSTOM", 0, 110.0, 10.0, 20.0), (0, "CUSTOM", 1, 110.0, 10.0, 20.0),
            (0, "FLASHMLA", 0, 100.0, 11.0, 20.0), (0, "FLASHMLA", 1, 100.0, 11.0, 20.0),
            (1, "FLASHMLA", 0, 100.0, 12.0, 19.0), (1, "CUSTOM", 0, 120.0, 10.0, 20.0),
            (1, "CUSTOM", 1, 90.0, 10.0, 22.0), (1, "FLASHMLA", 1, 100.0, 12.0, 21.0),
            (1, "FLASHMLA", 2, 100.0, 12.0, 20.0)]
    records = [{"backend": b, "call": c, "engine": c * 2 + (b == "CUSTOM"), "round": r, "output_tok_s": v,
                "decode_phase_s": d, "elapsed_s": d + ramp} for c, b, r, v, d, ramp in runs]
    pairs = bench_e2e.turn_pairs(records, "CUSTOM", "FLASHMLA")
    assert [(o["round"], p["round"], o["output_tok_s"]) for o, p in pairs] == [(0, 0, 120.0), (1, 1, 90.0)]
    text = bench_e2e.summary(records)
    assert "ours/FLASHMLA over the 2 rounds the engines served taking turns: geometric mean 1.039" in text
    assert "  CUSTOM over those 2 rounds: decode phase 10.000 s (sd 0.000), ramp 21.00 s (sd 1.41)" in text
    assert "  FLASHMLA over those 2 rounds: decode phase 12.000 s (sd 0.000), ramp 20.00 s (sd 1.41)" in text
    # Round 0: FLASHMLA first, ramps 19 then 20; round 1: CUSTOM first, 22 then 21.
    assert "  ramp, FLASHMLA minus CUSTOM: -1.00 s, 2 SE 0.00; first in its round minus second: +0.00 s, 2 SE 2.00" \
        in text
    # One round from each engine, one engine after the other: adjacent, but not taking turns.
    apart = [{**r, "taking_turns": False} for r in records[4:6]]
    assert bench_e2e.turn_pairs(apart, "CUSTOM", "FLASHMLA") == []
