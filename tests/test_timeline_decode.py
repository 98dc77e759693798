"""benchmarks/timeline_decode.py's reading of kernel stamps (kernels/timeline.h), on synthetic records."""
import pytest
import torch
from benchmark_scripts import load


@pytest.fixture
def timeline():
    return load("timeline_decode")


def test_decode_lane_unpacks_and_stops_at_the_first_empty_record(timeline):
    records = torch.zeros(4, 2, dtype=torch.long)
    records[0] = torch.tensor([1_000, timeline.Q_READY | 7 << 8 | 9 << 24])
    records[1] = torch.tensor([2_000, timeline.STORED | 131 << 8 | 1 << 24])
    records[3] = torch.tensor([9_000, timeline.ENTRY])  # after an empty record: not read
    assert timeline.decode_lane(records) == [(1_000, timeline.Q_READY, 7, 9), (2_000, timeline.STORED, 131, 1)]


def test_call_phases(timeline):
    t = timeline
    busy = [(1_000, t.ENTRY, 3, 0), (1_500, t.START, 3, 0), (3_000, t.Q_READY, 3, 0), (4_000, t.S_READY, 3, 0),
            (5_000, t.PAIR_END, 3, 0), (5_100, t.S_READY, 3, 2), (6_000, t.PAIR_END, 3, 2), (7_000, t.STORED, 3, 1)]
    empty = [(1_200, t.ENTRY, 5, 1)]
    call = t.call_phases([busy, [], empty], [2_000, 7_500, 9_000])
    phases = call["phases"]
    assert phases["entry"] == [0.0, 0.2]
    assert phases["q_in"] == [2.0] and phases["first_s"] == [1.0]
    assert phases["pair"] == [1.0] and phases["epilogue"] == [1.0]
    assert phases["end"] == [6.0, 0.2] and phases["pairs_per_lane"] == [2, 0]
    assert phases["next_q"] == []
    assert call["main_end"] == 6.0
    assert call["tail_idle"] == 0.0  # one busy lane: it is the grid's end
    second_busy = [(1_000, t.ENTRY, 4, 0), (3_000, t.PAIR_END, 4, 0), (4_000, t.STORED, 4, 0)]
    assert t.call_phases([busy, second_busy], [0, 0, 0])["tail_idle"] == pytest.approx((6.0 - 3.0) / (2 * 6.0))
    assert (call["combine_entry"], call["combine_waited"], call["combine_end"]) == (1.0, 6.5, 8.0)
    # Combine slots never written keep their initial values and are left out.
    assert "combine_end" not in t.call_phases([busy], [2_000, 7_500, 0])
    assert t.critical_lane([busy, [], empty]) is busy
    # Per-block combine stamps after the call-wide ones come back as blocks, from the same origin.
    assert call["blocks"] == []
    merging = [8_000, 8_400, 9_000, 9_500, 17 | 22 << 16]
    blocks = t.call_phases([busy], [2_000, 7_500, 9_000] + merging)["blocks"]
    assert blocks == [
        {"block": 0, "sm": 17, "pieces": 22, "waited": 7.0, "first_batch": 7.4, "merged": 8.0, "exit": 8.5}]
    # Two requests in one part: the boundary is measured from the first one's stores.
    second = [(7_400, t.Q_READY, 3, 1), (8_000, t.S_READY, 3, 0), (9_000, t.PAIR_END, 3, 0), (9_500, t.STORED, 3, 0)]
    phases = t.call_phases([busy + second], [0, 0, 0])["phases"]
    assert phases["next_q"] == [0.4] and phases["q_in"] == [2.0] and phases["pairs_per_lane"] == [3]
    # The first page in after each Q: 0.5 µs after the first request's, none recorded for the second's.
    pages = [(3_500, t.PAGES_IN, 3, 0)]
    phases = t.call_phases([sorted(busy + pages + second)], [0, 0, 0])["phases"]
    assert phases["pages_after_q"] == [0.5]


def test_summarize_gives_the_tail(timeline):
    assert timeline.summarize([]) == "-"
    line = timeline.summarize([float(v) for v in range(1, 11)])
    assert line.split() == ["min", "1.00", "med", "5.50", "p90", "9.00", "max", "10.00"]
    assert timeline.summarize([2.0]).split()[5] == "2.00"


def test_combine_blocks_keep_the_merging_ones(timeline):
    t = timeline
    head = [2_000, 7_500, 9_000]
    merging = [8_000, 8_400, 9_000, 9_500, 17 | 22 << 16]   # SM 17, 22 pieces
    unsplit = [8_100, 0, 0, 0, 3 | 1 << 16]                   # one piece: returns after the wait
    blocks = t.combine_blocks(head + merging + unsplit + [0] * 5 + merging, 1_000)
    assert blocks == [
        {"block": 0, "sm": 17, "pieces": 22, "waited": 7.0, "first_batch": 7.4, "merged": 8.0, "exit": 8.5},
        {"block": 3, "sm": 17, "pieces": 22, "waited": 7.0, "first_batch": 7.4, "merged": 8.0, "exit": 8.5},
    ]


def test_lane_end_model_reads_the_cost_of_a_pair_and_of_a_request(timeline):
    t = timeline

    def lane(sm, pairs, requests, slow=0):
        end = 1_000 + 4_000 * pairs + 6_000 * requests + slow
        return ([(1_000, t.ENTRY, sm, 0)] + [(2_000, t.Q_READY, sm, r) for r in range(requests)]
                + [(3_000 + k, t.PAIR_END, sm, 2 * k) for k in range(pairs)] + [(end, t.STORED, sm, 0)])

    work = [(10, 1), (8, 2), (12, 1), (9, 3), (11, 2), (10, 3), (7, 1), (12, 2)]
    exact = [{"lanes": [lane(sm, *w) for sm, w in enumerate(work)] + [[(1_000, t.ENTRY, 9, 0)]]}] * 2
    fit = t.lane_end_model(exact)
    assert fit["per_pair"] == pytest.approx(4.0) and fit["per_request"] == pytest.approx(6.0)
    assert fit["residual_sd"] == pytest.approx(0.0, abs=1e-9)
    # An SM that is slow in every call makes the split-half correlation high; noise that flips
    # from call to call makes it negative.
    offsets = [700, -900, 300, 800, -600, 200, -500, 100]

    def calls(sign):
        return [{"lanes": [lane(sm, *w, slow=offsets[sm] * sign(i)) for sm, w in enumerate(work)]} for i in range(4)]

    assert t.lane_end_model(calls(lambda i: 1))["sm_split_half_corr"] > 0.99
    assert t.lane_end_model(calls(lambda i: (-1) ** i))["sm_split_half_corr"] < -0.99
