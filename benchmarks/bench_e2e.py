#!/usr/bin/env python3
"""End-to-end vLLM throughput: CUSTOM (ours) beside FLASHMLA and FLASH_ATTN_MLA, in one call.

    python benchmarks/bench_e2e.py MODEL_DIR [--tp 1] [--json benchmarks/results/e2e_h100.json]

Runs `vllm bench throughput` (random dataset, 2048 in / 512 out, 600 prompts, dummy
weights) once per backend, after one small warm-up run that fills the Triton and
torch.compile caches, and prints output tokens/s with ratios ours / peer.

Runs of one backend differ by up to 8% on an H100 and up to 40% on an H200, so `--repeats N`
runs the backends N times in rotated order (each backend goes first once per rotation),
compares medians, and prints each backend's spread and an interval for ours / peer.
`--summarize A.json [B.json ...]` prints the same summary for records saved by earlier calls.

`--rounds-per-engine N` serves N timed rounds from each engine start instead (e2e_rounds.py, the
same workload through `LLM.generate`): on the GPU host an engine start takes several times longer
than a run. The rounds of one engine are not independent samples, so the summary takes each
engine's mean round as one sample. With `--take-turns`, one call keeps an engine of every backend
alive, and the engines take turns round by round (e2e_rounds.py). The summary also gives ours/peer
within each call (each saved file is one call) and their geometric mean: the runs of one call share
a host and a few minutes, so those ratios leave out the drift between calls and hosts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile

from e2e_rounds import ROUND_PREFIX, WARMUP

BACKENDS = ["CUSTOM", "FLASHMLA", "FLASH_ATTN_MLA"]
THROUGHPUT = re.compile(r"Throughput: ([\d.]+) requests/s, ([\d.]+) total tokens/s, ([\d.]+) output tokens/s")


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-len", type=int, default=2048)
    parser.add_argument("--output-len", type=int, default=512)
    parser.add_argument("--num-prompts", type=int, default=600)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--vllm-args", default="",
                        help="more `vllm bench throughput` arguments, e.g. '--max-cudagraph-capture-size 1024'")


def engine_args(args: argparse.Namespace) -> list[str]:
    """The engine arguments both tools pass to every run."""
    return ["--max-model-len", str(args.max_model_len), *shlex.split(args.vllm_args)]


def model_args(model: str, tp: int) -> list[str]:
    """The engine arguments that name the model, its dummy weights and the TP size."""
    return ["--model", model, "--load-format", "dummy", "--tensor-parallel-size", str(tp)]


def throughput_cmd(model: str, backend: str, tp: int, input_len: int, output_len: int, num_prompts: int,
                   extra: list[str]) -> list[str]:
    """`vllm bench throughput` on the random dataset with dummy weights."""
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "throughput", *model_args(model, tp),
            "--attention-backend", backend,
            "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len",
            str(output_len), "--num-prompts", str(num_prompts), *extra]


def run_throughput(model: str, backend: str, tp: int, input_len: int, output_len: int, num_prompts: int,
                   extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = throughput_cmd(model, backend, tp, input_len, output_len, num_prompts,
                             ["--output-json", os.path.join(tmp, "r.json"), *extra])
        print("$ " + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        match = THROUGHPUT.search(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not match:
            sys.stderr.write((proc.stdout + proc.stderr)[-6000:])
            raise RuntimeError(f"vllm bench throughput failed for {backend} (exit {proc.returncode})")
    return {"backend": backend, "tp": tp, "input_len": input_len, "output_len": output_len,
            "num_prompts": num_prompts, "output_tok_s": float(match.group(3)), "total_tok_s": float(match.group(2))}


def run_engine_rounds(model: str, backends: list[str], tp: int, input_len: int, output_len: int, num_prompts: int,
                      extra: list[str], rounds: int, warmup: bool, first_engine: int, on_round) -> None:
    """One engine per backend, numbered from first_engine, serving `rounds` timed rounds, taking turns
    (e2e_rounds.py); on_round(record) after each."""
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e_rounds.py"),
           "--backends", ",".join(backends), "--rounds", str(rounds), "--input-len", str(input_len),
           "--output-len", str(output_len), "--num-prompts", str(num_prompts), *([] if warmup else ["--no-warmup"]),
           "--", *model_args(model, tp), *extra]
    print("$ " + " ".join(cmd), flush=True)
    done = 0
    # The engines' own log goes straight through to stderr: a call cut short by a time limit still shows
    # how far the starts and rounds got.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith(ROUND_PREFIX):
            done += 1
            record = json.loads(line[len(ROUND_PREFIX):])
            on_round({"tp": tp, "input_len": input_len, "output_len": output_len, "num_prompts": num_prompts,
                      **record, "engine": first_engine + record["engine"]})
    proc.wait()
    if proc.returncode != 0 or done != rounds * len(backends):
        raise RuntimeError(f"e2e_rounds.py failed for {','.join(backends)} (exit {proc.returncode}, "
                           f"{done}/{rounds * len(backends)} rounds): its log is above")


def run_order(backends: list[str], repeats: int) -> list[str]:
    """Backends for `repeats` rounds, each round rotated by one, so no backend always runs first."""
    return [backends[(r + i) % len(backends)] for r in range(repeats) for i in range(len(backends))]


def samples_by_backend(records: list[dict]) -> dict[str, list[float]]:
    """Output tokens/s per backend, in run order: one sample a run, or, for records of
    --rounds-per-engine, one sample an engine (its mean round)."""
    runs: dict[tuple, list[float]] = {}
    for i, r in enumerate(records):
        run = ("engine", r["engine"]) if "engine" in r else ("run", i)
        runs.setdefault((r["backend"], run), []).append(r["output_tok_s"])
    samples: dict[str, list[float]] = {}
    for (backend, _), tok_s in runs.items():
        samples.setdefault(backend, []).append(statistics.mean(tok_s))
    return samples


def load_records(paths: list[str]) -> list[dict]:
    """The records of saved files, in order, each tagged with its file's index as "call". Each file
    numbers its engines from 0, so engines are renumbered to stay apart: two calls' engine 0 are two
    engine starts, two samples."""
    records: list[dict] = []
    for call, path in enumerate(paths):
        first_engine = 1 + max((r["engine"] for r in records if "engine" in r), default=-1)
        records += [{**r, "call": call, **({"engine": first_engine + r["engine"]} if "engine" in r else {})}
                    for r in json.load(open(path))]
    return records


def medians(records: list[dict]) -> dict[str, float]:
    """Median output tokens/s per backend."""
    return {b: statistics.median(v) for b, v in samples_by_backend(records).items()}


def paired_calls(records: list[dict], ours: str, peer: str) -> list[list[dict]]:
    """The records of each call that ran both backends, in call order. A round that only one of the
    two finished (a call cut short at its time limit) is left out, so that each backend's mean
    covers the same rounds."""
    calls: dict[int, list[dict]] = {}
    for r in records:
        calls.setdefault(r.get("call", 0), []).append(r)
    paired = []
    for call_records in calls.values():
        rounds_of = {b: {r.get("round") for r in call_records if r["backend"] == b} for b in (ours, peer)}
        both = rounds_of[ours] & rounds_of[peer]
        if both:
            paired.append([r for r in call_records if r.get("round") in both and r["backend"] in (ours, peer)])
    return paired


def calls_with_both(records: list[dict], ours: str, peer: str) -> list[tuple[float, str]]:
    """(ours / peer, the backend that ran first) for each call that ran both, in call order. The
    backends of one call ran on one host within minutes, so a call's ratio is free of the drift
    between calls and hosts, but not of the order within the call. For engines taking turns,
    the first is that of round 0."""
    found = []
    for call_records in paired_calls(records, ours, peer):
        means = {b: statistics.mean(v) for b, v in samples_by_backend(call_records).items()}
        found.append((means[ours] / means[peer], call_records[0]["backend"]))
    return found


def turns_in_order(records: list[dict], ours: str, peer: str) -> list[tuple[dict, dict]]:
    """(first, second) for each round the two served back to back: engines taking turns, seconds
    apart. Rounds of engines run one after the other share a round number too, but not adjacent
    records unless each engine served a single round; records marked taking_turns False (written
    since the twenty-first session) are left out for that case."""
    return [(a, b) for a, b in zip(records, records[1:])
            if (a.get("call"), a.get("round")) == (b.get("call"), b.get("round")) and "round" in a
            and {a["backend"], b["backend"]} == {ours, peer} and a.get("taking_turns", True)]


def turn_pairs(records: list[dict], ours: str, peer: str) -> list[tuple[dict, dict]]:
    """(ours, peer) for each round the two served back to back (turns_in_order)."""
    return [(a, b) if a["backend"] == ours else (b, a) for a, b in turns_in_order(records, ours, peer)]


def ramp_seconds(record: dict) -> float:
    """A round's seconds outside its decode phase: the prefill ramp."""
    return record["elapsed_s"] - record["decode_phase_s"]


def round_note(record: dict) -> str:
    """Where a round from a kept-alive engine ran, and where its ramp's time went, as far as recorded."""
    if "engine" not in record:
        return ""
    note = f"   engine {record['engine']} round {record['round']}"
    if record.get("decode_phase_s") is not None:
        note += f", ramp {ramp_seconds(record):.1f} s"
    if record.get("handover_s") is not None:
        note += (f" (prompts handed over in {record['handover_s']:.1f} s, longest wait for a first token "
                 f"{record['first_token_wait_s']:.1f} s)")
    return note


def with_phases(pairs: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """The pairs of rounds that both recorded their decode phase (e2e_rounds since the twenty-first session)."""
    return [pair for pair in pairs if all(r.get("decode_phase_s") is not None for r in pair)]


def phase_spread(pairs: list[tuple[dict, dict]], backends: tuple[str, str]) -> list[str]:
    """A line per backend: its decode phase and its ramp, mean and sd, over the paired rounds that
    recorded the phase."""
    timed = with_phases(pairs)
    if len(timed) < 2:
        return []
    lines = []
    for side, backend in enumerate(backends):
        decode = [pair[side]["decode_phase_s"] for pair in timed]
        ramp = [ramp_seconds(pair[side]) for pair in timed]
        lines.append(f"  {backend} over those {len(timed)} rounds: decode phase {statistics.mean(decode):.3f} s "
                     f"(sd {statistics.stdev(decode):.3f}), ramp {statistics.mean(ramp):.2f} s "
                     f"(sd {statistics.stdev(ramp):.2f})")
    return lines


def mean_and_two_se_text(values: list[float]) -> str:
    """"+M s, 2 SE E" for differences in seconds."""
    return f"{statistics.mean(values):+.2f} s, 2 SE {2 * statistics.stdev(values) / len(values) ** 0.5:.2f}"


def ramp_differences(records: list[dict], backends: tuple[str, str]) -> list[str]:
    """Over the turns that recorded the phase: the peer's ramp minus ours, and the ramp of the engine
    that went first in its round minus the second's (the first one served the round before's last
    turn too: it slept and woke with no turn of the other between)."""
    turns = with_phases(turns_in_order(records, *backends))
    if len(turns) < 2:
        return []
    ours, peer = backends
    by_backend = [{r["backend"]: ramp_seconds(r) for r in t} for t in turns]
    return [f"  ramp, {peer} minus {ours}: {mean_and_two_se_text([d[peer] - d[ours] for d in by_backend])}; "
            f"first in its round minus second: {mean_and_two_se_text([ramp_seconds(a) - ramp_seconds(b) for a, b in turns])}"]


def phase_ratios_by_call(records: list[dict], ours: str, peer: str) -> list[tuple[float, float]]:
    """(peer's seconds / ours) in the decode phase and in the rest of the round (e2e_rounds'
    decode_phase_s), backends' means over the rounds both finished, for each call whose records
    all carry the phase."""
    def decode_seconds(r: dict) -> float:
        return r["decode_phase_s"]

    found = []
    for call_records in paired_calls(records, ours, peer):
        if any(r.get("decode_phase_s") is None for r in call_records):
            continue

        def mean(backend: str, seconds) -> float:
            return statistics.mean(seconds(r) for r in call_records if r["backend"] == backend)

        found.append((mean(peer, decode_seconds) / mean(ours, decode_seconds),
                      mean(peer, ramp_seconds) / mean(ours, ramp_seconds)))
    return found


def ratios_by_call(records: list[dict], ours: str, peer: str) -> list[float]:
    """ours / peer within each call that ran both, in call order."""
    return [ratio for ratio, _ in calls_with_both(records, ours, peer)]


def order_balanced(records: list[dict], ours: str, peer: str) -> tuple[float, float, float] | None:
    """(geometric mean of the calls where ours ran first, of those where the peer did, and the
    geometric mean of the two): the last weighs both orders alike, so that a host that slows
    within a call favours neither backend. None unless both orders ran."""
    calls = calls_with_both(records, ours, peer)
    by_first = {b: [ratio for ratio, first in calls if first == b] for b in (ours, peer)}
    if not (by_first[ours] and by_first[peer]):
        return None
    ours_first, peer_first = (geometric_mean_and_two_se(by_first[b])[0] for b in (ours, peer))
    return ours_first, peer_first, math.sqrt(ours_first * peer_first)


def geometric_mean_and_two_se(ratios: list[float]) -> tuple[float, float | None]:
    """The geometric mean of the ratios, and the factor of two standard errors of their logs
    (None below 2 ratios): the interval is mean / factor .. mean * factor."""
    logs = [math.log(x) for x in ratios]
    mean = math.exp(statistics.mean(logs))
    if len(logs) < 2:
        return mean, None
    return mean, math.exp(2 * statistics.stdev(logs) / len(logs) ** 0.5)


def geometric_mean_text(ratios: list[float]) -> str:
    """"geometric mean M, 2 SE LO..HI" (the interval left out below 2 ratios)."""
    mean, factor = geometric_mean_and_two_se(ratios)
    return f"geometric mean {mean:.3f}" + (f", 2 SE {mean / factor:.3f}..{mean * factor:.3f}" if factor else "")


def ratio_of_means(ours: list[float], peer: list[float]) -> tuple[float, float | None]:
    """mean(ours) / mean(peer) and two standard errors of it (delta method; None below 2 runs each).

    The runs of a backend are taken as independent samples: two standard errors is roughly a
    95% interval, wider in truth for a handful of runs."""
    ratio = statistics.mean(ours) / statistics.mean(peer)
    if len(ours) < 2 or len(peer) < 2:
        return ratio, None
    rel_var = sum((statistics.stdev(x) / statistics.mean(x)) ** 2 / len(x) for x in (ours, peer))
    return ratio, 2 * ratio * rel_var ** 0.5


def summary(records: list[dict], ours_backend: str = "CUSTOM") -> str:
    """Runs in order, then per backend: runs, median, spread (min..max) and ours / backend."""
    lines = [f"{'run':>3} {'backend':<16} {'output tok/s':>13}"]
    lines += [f"{i:>3} {r['backend']:<16} {r['output_tok_s']:>13.1f}{round_note(r)}"
              for i, r in enumerate(records, 1)]
    samples, median = samples_by_backend(records), medians(records)
    ours = samples.get(ours_backend)
    lines += ["", f"{'backend':<16} {'runs':>4} {'median tok/s':>13} {'min..max':>17}   ours/backend: medians, means ± 2 SE"]
    for b, v in samples.items():
        row = f"{b:<16} {len(v):>4} {median[b]:>13.1f} {min(v):>8.0f}..{max(v):<8.0f}"
        if ours and b != ours_backend:
            ratio, two_se = ratio_of_means(ours, v)
            row += f"   {median[ours_backend] / median[b]:.3f}, {ratio:.3f}"
            row += f" ± {two_se:.3f}" if two_se is not None else ""
        lines.append(row.rstrip())
    for b in samples:
        calls = ratios_by_call(records, ours_backend, b) if ours and b != ours_backend else []
        if calls:
            lines.append(f"ours/{b} within each call: {', '.join(f'{x:.3f}' for x in calls)}; "
                         f"{geometric_mean_text(calls)}")
            phases = phase_ratios_by_call(records, ours_backend, b)
            if phases:
                lines.append(f"{b}'s seconds / ours within each call, decode phase: "
                             f"{', '.join(f'{d:.3f}' for d, _ in phases)}; the rest (prefill ramp): "
                             f"{', '.join(f'{r:.3f}' for _, r in phases)}")
            pairs = turn_pairs(records, ours_backend, b)
            if len(pairs) >= 2:
                ratios = [o["output_tok_s"] / p["output_tok_s"] for o, p in pairs]
                lines.append(f"ours/{b} over the {len(pairs)} rounds the engines served taking turns: "
                             f"{geometric_mean_text(ratios)}")
                lines += phase_spread(pairs, (ours_backend, b))
                lines += ramp_differences(records, (ours_backend, b))
            balanced = order_balanced(records, ours_backend, b)
            if balanced:
                lines.append(f"ours/{b} by which ran first in the call: {ours_backend} {balanced[0]:.3f}, "
                             f"{b} {balanced[1]:.3f}; order-balanced {balanced[2]:.3f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="model folder (not needed with --summarize)")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    add_workload_args(parser)
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all backends, in rotated order")
    parser.add_argument("--rounds-per-engine", type=int, default=0,
                        help="timed rounds from each engine start (e2e_rounds.py); 0: one `vllm bench throughput` a run")
    parser.add_argument("--take-turns", action="store_true",
                        help="with --rounds-per-engine: the backends' engines alive together, taking turns round by round")
    parser.add_argument("--json", help="write the records (list of dicts) to this path")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", help="summarize saved records; runs nothing")
    args = parser.parse_args()

    if args.summarize:
        print(summary(load_records(args.summarize)))
        return
    if not args.model:
        parser.error("a model folder is needed unless --summarize is given")
    extra = engine_args(args)
    backends = args.backends.split(",")
    records = []

    def keep(record: dict) -> None:
        records.append(record)
        if args.json:  # after every run, so that a call cut short keeps the runs it finished
            with open(args.json, "w") as f:
                json.dump(records, f, indent=1)

    workload = (args.tp, args.input_len, args.output_len, args.num_prompts, extra)
    if args.rounds_per_engine:
        calls = [backends] * args.repeats if args.take_turns else [[b] for b in run_order(backends, args.repeats)]
        first_engine = 0
        for call_backends in calls:
            run_engine_rounds(args.model, call_backends, *workload, args.rounds_per_engine, not args.no_warmup,
                              first_engine, lambda record: keep({**record, "taking_turns": args.take_turns}))
            first_engine += len(call_backends)
    else:
        if not args.no_warmup:
            run_throughput(args.model, backends[0], args.tp, WARMUP.input_len, WARMUP.output_len, WARMUP.num_prompts,
                           extra)
        for b in run_order(backends, args.repeats):
            keep(run_throughput(args.model, b, *workload))
    print("\n" + summary(records))


if __name__ == "__main__":
    main()
