"""The clock and power bookkeeping of benchmarks/sustained_decode.py (no GPU needed)."""
import datetime

from benchmark_scripts import load

sustained_decode = load("sustained_decode")


def test_samples_are_parsed_and_malformed_lines_skipped():
    lines = ["2026/11/28 10:13:40.870, 1650, 693.5", "", "[N/A], 1650, 693", "2026/11/28 10:13:41.120, 1605, 694.0"]
    samples = sustained_decode.parse_samples(lines)
    assert [(s[1], s[2]) for s in samples] == [(1650.0, 693.5), (1605.0, 694.0)]
    assert samples[1][0] - samples[0][0] == datetime.timedelta(milliseconds=250)


def test_window_medians_skip_the_settling_samples():
    t0 = datetime.datetime(2026, 11, 28, 10, 0, 0)
    at = lambda ms: t0 + datetime.timedelta(milliseconds=ms)
    # The first 0.5 s of a window still shows the previous kernel's clock.
    samples = [(at(100), 1980.0, 300.0), (at(400), 1900.0, 500.0)]
    samples += [(at(600 + 100 * i), 1600.0 + 10 * i, 690.0 + i) for i in range(5)]
    samples += [(at(2000), 1980.0, 100.0)]  # after the window
    clock, power, count = sustained_decode.window_medians(samples, t0, at(1500))
    assert (clock, power, count) == (1620.0, 692.0, 5)
    clock, power, count = sustained_decode.window_medians(samples, at(5000), at(6000))
    assert count == 0 and clock != clock and power != power  # NaN: no sample to report
