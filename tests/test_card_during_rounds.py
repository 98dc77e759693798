"""benchmarks/card_during_rounds.py: the card's samples placed in each round's phases (no GPU needed)."""
import math

from benchmark_scripts import load

card = load("card_during_rounds")


def smi_line(local_s: float, sm_mhz: float, watts: float) -> str:
    stamp = card.datetime.fromtimestamp(local_s, card.timezone.utc).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    return f"{stamp}, {sm_mhz:.0f} MHz, 2619 MHz, {watts:.2f} W, 50\n"


def test_samples_are_parsed_and_broken_lines_skipped():
    lines = [smi_line(1000.25, 1980, 650.5), "2026/11/29 04:50:00.000, 1980 MH", "not a sample\n",
             "2026/11/29 04:50:00.500, [N/A], 2619 MHz, 300.00 W, 48\n"]
    samples = card.read_samples(lines)
    assert len(samples) == 2
    assert abs(samples[0].local_s - 1000.25) < 1e-6 and samples[0].sm_mhz == 1980 and samples[0].watts == 650.5
    assert math.isnan(samples[1].sm_mhz) and samples[1].celsius == 48


def test_rounds_take_the_samples_of_their_phases_on_the_local_clock():
    # The host's clock is UTC+1 h: a round started at unix 1000 s is at local 4600 s. Its ramp runs
    # 4600..4610 at 1500 MHz, its decode phase 4610..4615 at 1900 MHz; samples every 0.25 s.
    lines = [smi_line(4600 + 0.25 * i, 1500 if i < 40 else 1900, 600.0) for i in range(60)]
    record = {"backend": "CUSTOM", "round": 0, "start_unix_s": 1000.0, "utc_offset_s": 3600, "elapsed_s": 15.0,
              "decode_phase_s": 5.0}
    [found] = card.rounds_on_card([record, {**record, "start_unix_s": None}], card.read_samples(lines))
    assert found.ramp.samples == 40 and found.ramp.sm_mhz == 1500 and found.ramp.seconds == 10.0
    assert found.decode.samples == 20 and found.decode.sm_mhz == 1900 and found.decode.seconds == 5.0


def test_a_ramp_slowed_by_its_clock_shows_steady_cycles():
    # Four rounds whose ramps did the same cycles at different clocks: seconds spread, cycles do not.
    # Their power follows the clock.
    windows = [card.Window(seconds=15e3 / mhz, samples=40, sm_mhz=mhz, watts=mhz / 3, celsius=50.0)
               for mhz in (1400, 1600, 1800, 1980)]
    line = card.spread_line("ramp", windows)
    assert "SM cycles cv 0.0%" in line and "corr(seconds, SM clock) -0.9" in line
    assert "corr(seconds, power) -0.9" in line
    rounds = [card.RoundOnCard({"backend": "CUSTOM", "round": i}, w, w) for i, w in enumerate(windows)]
    text = card.summary(rounds)
    assert text.count("\n") == len(windows) + 3 and "decode phase, CUSTOM: 4 rounds" in text
