#!/usr/bin/env python3
"""The card's SM clock, power and temperature in each round's prefill ramp and decode phase.

    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu \\
        --format=csv,noheader -lms 250 > smi.csv &
    python3 benchmarks/bench_e2e.py MODEL --rounds-per-engine N ... --json rounds.json; kill %1
    python3 benchmarks/card_during_rounds.py --call rounds.json smi.csv [--call ...]

A round of bench_e2e's rounds is a prefill ramp (compute-heavy: the prompts' prefill, with decodes
riding along) and a decode phase (bound by HBM bandwidth). The ramp's seconds move by ±2 s from
round to round for either backend (DESIGN, twenty-first session). At the card's power cap the SM
clock moves with power and temperature: if the ramp's seconds follow its clock, then its SM cycles
(seconds × clock) spread less than its seconds, and the clock is the noise between rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime, timezone
from typing import NamedTuple


class CardSample(NamedTuple):
    local_s: float  # the card host's local wall clock, in seconds
    sm_mhz: float
    mem_mhz: float
    watts: float
    celsius: float


def leading_number(field: str) -> float:
    """'1980 MHz' → 1980.0; '[N/A]' → nan."""
    try:
        return float(field.split()[0])
    except (IndexError, ValueError):
        return float("nan")


def read_samples(lines) -> list[CardSample]:
    """nvidia-smi's `--query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu
    --format=csv,noheader` lines; a line cut short (the sampler killed mid-write) is skipped."""
    samples = []
    for line in lines:
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5:
            continue
        try:
            stamp = datetime.strptime(fields[0], "%Y/%m/%d %H:%M:%S.%f")
        except ValueError:
            continue
        # The host's local wall clock read as if it were UTC: rounds_on_card moves their starts onto it.
        local_s = stamp.replace(tzinfo=timezone.utc).timestamp()
        samples.append(CardSample(local_s, *(leading_number(f) for f in fields[1:])))
    return samples


class Window(NamedTuple):
    seconds: float
    samples: int
    sm_mhz: float
    watts: float
    celsius: float


def window(samples: list[CardSample], begin_s: float, end_s: float) -> Window:
    """The card's means over [begin_s, end_s) on the samples' clock (nan where no sample fell in it)."""
    inside = [s for s in samples if begin_s <= s.local_s < end_s]

    def mean(values) -> float:
        values = list(values)
        return statistics.mean(values) if values else float("nan")

    return Window(end_s - begin_s, len(inside), mean(s.sm_mhz for s in inside), mean(s.watts for s in inside),
                  mean(s.celsius for s in inside))


class RoundOnCard(NamedTuple):
    record: dict
    ramp: Window
    decode: Window


def rounds_on_card(records: list[dict], samples: list[CardSample]) -> list[RoundOnCard]:
    """Each round that recorded its wall-clock start and decode phase, with the card's means over its
    ramp and over its decode phase."""
    found = []
    for r in records:
        if r.get("start_unix_s") is None or r.get("decode_phase_s") is None:
            continue
        start = r["start_unix_s"] + r["utc_offset_s"]  # onto the samples' local clock
        end = start + r["elapsed_s"]
        ramp_end = end - r["decode_phase_s"]
        found.append(RoundOnCard(r, window(samples, start, ramp_end), window(samples, ramp_end, end)))
    return found


def spread_line(name: str, windows: list[Window]) -> str:
    """Seconds against SM clock over the windows: their correlation, and the coefficient of variation
    of the seconds and of the SM cycles (seconds × clock). Also the seconds' correlation with power:
    a phase that takes longer at lower power spent the extra time with the card waiting."""
    seconds = [w.seconds for w in windows]
    cycles = [w.seconds * w.sm_mhz for w in windows]

    def cv(values: list[float]) -> float:
        return statistics.stdev(values) / statistics.mean(values)

    clock = statistics.correlation(seconds, [w.sm_mhz for w in windows])
    power = statistics.correlation(seconds, [w.watts for w in windows])
    return (f"{name}: {len(windows)} rounds, seconds {statistics.mean(seconds):.2f} (cv {cv(seconds):.1%}), "
            f"SM cycles cv {cv(cycles):.1%}, corr(seconds, SM clock) {clock:+.2f}, corr(seconds, power) {power:+.2f}")


def summary(rounds: list[RoundOnCard]) -> str:
    lines = [f"{'call':>4} {'round':>5} {'backend':<10} {'ramp s':>7} {'MHz':>6} {'W':>5} {'°C':>4}   "
             f"{'decode s':>8} {'MHz':>6} {'W':>5} {'°C':>4}"]
    for x in rounds:
        lines.append(f"{x.record.get('call', 0):>4} {x.record['round']:>5} {x.record['backend']:<10} "
                     f"{x.ramp.seconds:>7.2f} {x.ramp.sm_mhz:>6.0f} {x.ramp.watts:>5.0f} {x.ramp.celsius:>4.0f}   "
                     f"{x.decode.seconds:>8.3f} {x.decode.sm_mhz:>6.0f} {x.decode.watts:>5.0f} {x.decode.celsius:>4.0f}")
    sampled = [x for x in rounds if x.ramp.samples and x.decode.samples]
    if len(sampled) < len(rounds):
        lines.append(f"{len(rounds) - len(sampled)} rounds had no card sample in a phase and are left out below")
    if len(sampled) >= 3:
        lines.append("")
        lines.append(spread_line("ramp, both backends", [x.ramp for x in sampled]))
        for backend in sorted({x.record["backend"] for x in sampled}):
            decode = [x.decode for x in sampled if x.record["backend"] == backend]
            if len(decode) >= 3:
                lines.append(spread_line(f"decode phase, {backend}", decode))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--call", nargs=2, action="append", required=True, metavar=("ROUNDS_JSON", "SMI_CSV"),
                        help="one call's records (bench_e2e --json) and the card's samples taken beside it")
    args = parser.parse_args()
    rounds = []
    for call, (records_path, samples_path) in enumerate(args.call):
        with open(samples_path) as f:
            samples = read_samples(f)
        records = [{**r, "call": call} for r in json.load(open(records_path))]
        rounds += rounds_on_card(records, samples)
    print(summary(rounds))


if __name__ == "__main__":
    main()
