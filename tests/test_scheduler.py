"""Properties of the tile-scheduler metadata, through its Python model and the CPU op."""
import random
import sys
from types import SimpleNamespace

import pytest
import torch

import mla_backend
from mla_backend import reference
from mla_backend.reference import PAGE_SIZE, schedule_parts

from benchmark_scripts import load


def pieces_of(rows, seqlens):
    """Per request, the (part, first page, end page, split index) pieces in part order."""
    batch = len(seqlens)
    pages = [-(-s // PAGE_SIZE) for s in seqlens]
    pieces = {i: [] for i in range(batch)}
    for part, (begin_req, begin_blk, end_req, end_blk, begin_split, *reserved) in enumerate(rows):
        assert reserved == [0, 0, 0]
        if begin_req >= batch:
            continue
        assert begin_req <= end_req < batch
        for req in range(begin_req, end_req + 1):
            lo = begin_blk if req == begin_req else 0
            hi = end_blk if req == end_req else pages[req]
            split = begin_split if req == begin_req else 0
            assert 0 <= lo <= hi <= pages[req]
            assert lo % 2 == 0, "pieces start on a page pair"
            pieces[req].append((part, lo, hi, split))
    return pieces, pages


def check_schedule(seqlens, num_parts, **options):
    rows, num_splits = schedule_parts(seqlens, num_parts, **options)
    assert len(rows) == num_parts and len(num_splits) == len(seqlens) + 1
    pieces, pages = pieces_of(rows, seqlens)
    assert num_splits[0] == 0
    for req, ps in pieces.items():
        # Every page covered exactly once, by consecutive parts, in order.
        assert ps, f"request {req} is in no part"
        covered = [blk for _, lo, hi, _ in ps for blk in range(lo, hi)]
        assert covered == list(range(pages[req])), f"request {req}: pages {covered}"
        parts = [part for part, *_ in ps]
        assert parts == list(range(parts[0], parts[0] + len(ps)))
        assert [split for *_, split in ps] == list(range(len(ps)))
        # num_splits is the cumulative piece count.
        assert num_splits[req + 1] - num_splits[req] == len(ps)
        if len(ps) > 1:
            # A large batch's combine is indexed by part: it finds a split request at the part
            # that its last piece begins.
            last_part = ps[-1][0]
            assert rows[last_part][0] == req and rows[last_part][4] == len(ps) - 1
    # Each part adds at most one split beyond one per request.
    assert num_splits[-1] <= len(seqlens) + num_parts
    # Empty parts only at the end.
    empty = [r[0] >= len(seqlens) for r in rows]
    assert empty == sorted(empty)


@pytest.mark.parametrize("seed", range(40))
def test_schedule_properties_random(seed):
    rng = random.Random(seed)
    batch = rng.choice([1, 2, 3, 7, 64, 128, 1024])
    seqlens = [rng.choice([0, 1, 63, 64, 65, rng.randint(0, 20000), rng.randint(0, 131072)]) for _ in range(batch)]
    num_parts = rng.choice([1, 2, 33, 66, 132])
    check_schedule(seqlens, num_parts)


@pytest.mark.parametrize("fixed,slack", [(2, None), (3, None), (4, None), (3, 2), (6, 0)])
@pytest.mark.parametrize("seed", range(8))
def test_schedule_properties_at_other_costs(seed, fixed, slack):
    # ab_schedule.py's fixed=H and slack=H: a request's fixed cost and a part's slack in half pairs
    # move where pieces end, never which pages are covered.
    rng = random.Random(1000 + seed)
    batch = rng.choice([3, 64, 600])
    seqlens = [rng.choice([0, 1, 65, rng.randint(0, 20000), rng.randint(0, 131072)]) for _ in range(batch)]
    check_schedule(seqlens, rng.choice([33, 66, 132]), fixed_cost_half_pairs=fixed, slack_half_pairs=slack)


def test_default_costs_are_three_pairs():
    rng = random.Random(7)
    seqlens = [rng.randint(0, 30000) for _ in range(200)]
    assert schedule_parts(seqlens, 132) == schedule_parts(seqlens, 132, fixed_cost_half_pairs=6, slack_half_pairs=6)
    assert schedule_parts(seqlens, 132) != schedule_parts(seqlens, 132, fixed_cost_half_pairs=3)


def test_schedule_balances_parts():
    seqlens = [8192] * 64
    rows, num_splits = schedule_parts(seqlens, 132)
    pieces, pages = pieces_of(rows, seqlens)
    load = [0] * 132
    for ps in pieces.values():
        for part, lo, hi, _ in ps:
            load[part] += reference.pairs_left(hi, lo) + reference.FIXED_COST_PAIRS
    total = sum(reference.pairs_left(p, 0) + reference.FIXED_COST_PAIRS for p in pages)
    payload = -(-total // 132) + reference.FIXED_COST_PAIRS
    assert max(load) <= payload
    assert num_splits[-1] > 64  # fewer requests than parts: requests are split


def test_one_request_a_part_when_each_fits_a_budget():
    rng = random.Random(3)
    seqlens = [rng.randint(2048, 2560) for _ in range(64)] + [0]
    rows, num_splits = schedule_parts(seqlens, 66)
    pages = [-(-s // PAGE_SIZE) for s in seqlens]
    assert rows[:65] == [[i, 0, i, pages[i], 0, 0, 0, 0] for i in range(65)]
    assert rows[65][0] == len(seqlens)  # empty
    assert num_splits == list(range(66))
    check_schedule(seqlens, 66)
    # One request above the budget: the batch is poured and split as before.
    rows, num_splits = schedule_parts(seqlens[:-1] + [20000], 66)
    assert num_splits[-1] > 65
    # More requests than parts: poured.
    assert schedule_parts(seqlens[:40], 33)[1][-1] > 40


@pytest.mark.parametrize("seed", range(20))
def test_schedule_properties_near_one_request_a_part(seed):
    rng = random.Random(100 + seed)
    num_parts = rng.choice([33, 66, 132])
    batch = rng.randint(1, num_parts)
    base = rng.randint(0, 9000)
    seqlens = [max(base + rng.randint(-600, 600), 0) for _ in range(batch)]
    check_schedule(seqlens, num_parts)


def test_skewed_batch_splits_the_long_request():
    seqlens = [4641, 45118, 1730, 1696]
    rows, num_splits = schedule_parts(seqlens, 132)
    assert num_splits[2] - num_splits[1] > 50
    check_schedule(seqlens, 132)


def test_cpu_op_matches_model():
    seqlens = [0, 5, 4096, 70000, 64]
    tsm, num_splits = mla_backend.get_mla_metadata(torch.tensor(seqlens, dtype=torch.int32), 2 * 128, 1)
    parts = reference.num_sm_parts(reference.DEFAULT_NUM_SMS, 256, 1)
    assert parts == 33
    rows, splits = schedule_parts(seqlens, parts)
    assert tsm.dtype == torch.int32 and tsm.shape == (parts, 8)
    assert tsm.tolist() == rows and num_splits.tolist() == splits


def test_num_sm_parts():
    assert reference.num_sm_parts(132, 16, 1) == 132
    assert reference.num_sm_parts(132, 128, 1) == 66
    assert reference.num_sm_parts(132, 256, 1) == 33
    assert reference.num_sm_parts(2, 1024, 1) == 1


def test_decode_schedule_takes_device_strings():
    # SGLang hands its device over as a string ("cuda"), vLLM as a torch.device.
    from mla_backend.schedule import DecodeSchedule

    seq_lens = torch.tensor([70, 0, 300], dtype=torch.int32)
    by_name = DecodeSchedule(16, 4, "cpu").build(seq_lens, 2)
    by_device = DecodeSchedule(16, 4, torch.device("cpu")).build(seq_lens, 2)
    for a, b in zip(by_name, by_device):
        assert torch.equal(a, b)
    assert by_name[0].shape[0] == reference.DEFAULT_NUM_SMS


@pytest.fixture
def ab_schedule():
    return load("ab_schedule")


def test_ab_schedule_metadata(ab_schedule):
    ab = ab_schedule
    rng = random.Random(5)
    seqlens = [rng.randint(2048, 2560) for _ in range(64)]
    model = ab.model_metadata(seqlens, 128, "model", 132)
    assert [t.tolist() for t in model] == [t.tolist() for t in reference.get_mla_metadata(
        torch.tensor(seqlens, dtype=torch.int32), 128, 1, 132)]
    assert model[1].tolist() == list(range(65))  # one request a part
    pour = ab.model_metadata(seqlens, 128, "pour", 132)
    assert pour[1][-1] > 64  # the pour splits some
    tsm, splits = ab.model_metadata(seqlens, 128, "pour+parts=33", 132)
    assert tsm.shape == (33, 8) and tsm.tolist() == schedule_parts(seqlens, 33, whole_requests=False)[0]
    tsm, splits = ab.model_metadata(seqlens, 128, "pour+fixed=3+slack=4", 132)
    assert tsm.tolist() == schedule_parts(seqlens, 66, whole_requests=False, fixed_cost_half_pairs=3,
                                          slack_half_pairs=4)[0]
    with pytest.raises(ValueError, match="unknown schedule"):
        ab.model_metadata(seqlens, 128, "waves", 132)


def test_ab_schedule_runs_through_the_reference_path(ab_schedule, monkeypatch, capsys):
    # The tool's whole flow on the CPU: reference kernels, a fake timer, the e2e b64 shape.
    import triton

    ab = ab_schedule

    real_inputs = ab.make_decode_inputs
    monkeypatch.setattr(ab, "make_decode_inputs", lambda *a, **k: real_inputs(*a, **{**k, "device": "cpu"}))
    monkeypatch.setattr(ab.torch.cuda, "get_device_properties", lambda *a: SimpleNamespace(multi_processor_count=132))
    monkeypatch.setattr(ab.torch.cuda, "get_device_name", lambda *a: "cpu")
    times = iter([1.0, 0.9] * 2)
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **k: (fn(), next(times))[1])
    monkeypatch.setattr(sys, "argv", ["ab_schedule.py", "--e2e-batch", "64", "--h-q", "16", "--rounds", "2",
                                      "pour+parts=66", "model+parts=66"])
    ab.main()
    lines = capsys.readouterr().out.splitlines()
    pour, model = (next(line for line in lines if line.startswith(s)) for s in ("pour+parts=66", "model+parts=66"))
    from bench_decode import config_seqlens  # benchmarks/ is on sys.path through load()

    seqlens = config_seqlens(SimpleNamespace(e2e_batch=64, seqlens=None))
    splits = schedule_parts(seqlens, 66, whole_requests=False)[1]
    split_requests = sum(b - a > 1 for a, b in zip(splits, splits[1:]))
    assert split_requests > 0
    assert "1000.0 us" in pour and "+0.0%" in pour and f"split requests {split_requests:4d}" in pour
    assert "900.0 us" in model and "-10.0%" in model and "split requests    0" in model
    assert float(model.split()[-1]) < 1e-5  # the comparison printed (the reference path ignores the schedule)
