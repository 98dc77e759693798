#!/usr/bin/env python3
"""Where one decode call's time goes, from in-kernel %globaltimer stamps (kernels/timeline.h).

Needs the diagnosis build, which is a separate `_C.abi3.so`:

    MLA_TIMELINE=1 python3 setup.py build_ext --inplace      # in a copy of the checkout
    PYTHONPATH=COPY python3 benchmarks/timeline_decode.py --seqlens 4641,45118,1730,1696 --s-q 4 --h-q 16

Each call runs after a 256 MB L2 flush, as in `triton.testing.do_bench`. Per call, the phases of
every (part, M tile, warpgroup) lane measured from the first CTA's entry: entry (launch ramp), Q
in, first S, pair steps, the epilogue's stores, the next request's Q (at a request boundary
inside a part), the end; then the combine's entry, its return from the grid-dependency wait, and
its end, and per combine block that merges (thread 0's stamps): its wait, its first batch of
pieces in, its last multiply and its exit. (The diagnosis build allocates its stamp buffers in
every call, so the op's own wall time is not representative and is not reported.)
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

import mla_backend
from bench_decode import add_config_args, config_seqlens
from mla_backend.testing import make_decode_inputs

# kernels/timeline.h's Stamp values, in order.
STAMP_NAMES = ("entry", "start", "q_ready", "s_ready", "pair_end", "stored", "pages_in")
ENTRY, START, Q_READY, S_READY, PAIR_END, STORED, PAGES_IN = range(len(STAMP_NAMES))


def decode_lane(records: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(ns, stamp, smid, arg) of one lane's recorded stamps, in order."""
    out = []
    for ns, word in records.tolist():
        if ns == 0:
            break
        out.append((ns, word & 0xFF, (word >> 8) & 0xFFFF, word >> 24))
    return out


def first_entry(lanes: list[list[tuple]]) -> int:
    """The earliest stamp of a call: the origin its phases are measured from."""
    return min(lane[0][0] for lane in lanes if lane)


# kernels/timeline.h's combine layout: 3 call-wide stamps, then 5 a block.
COMBINE_STAMPS, COMBINE_BLOCK_STAMPS = 3, 5


def combine_blocks(combine: list[int], t0: int) -> list[dict]:
    """The combine blocks that merged something: their stamps in µs from t0, their SM and pieces."""
    us = lambda ns: (ns - t0) / 1e3  # noqa: E731
    blocks = []
    for i in range(COMBINE_STAMPS, len(combine) - COMBINE_BLOCK_STAMPS + 1, COMBINE_BLOCK_STAMPS):
        waited, first_batch, merged, exit_, info = combine[i:i + COMBINE_BLOCK_STAMPS]
        pieces = info >> 16
        if pieces <= 1 or not exit_:
            continue
        blocks.append({"block": (i - COMBINE_STAMPS) // COMBINE_BLOCK_STAMPS, "sm": info & 0xFFFF, "pieces": pieces,
                       "waited": us(waited), "first_batch": us(first_batch), "merged": us(merged),
                       "exit": us(exit_)})
    return blocks


def call_phases(lanes: list[list[tuple]], combine: list[int]) -> dict:
    """Phase times in µs of one call, each lane's from its own stamps, all offsets from the first entry;
    `combine` is the call's combine record (call-wide stamps, then any per-block ones)."""
    t0 = first_entry(lanes)
    us = lambda ns: (ns - t0) / 1e3  # noqa: E731
    phases = {k: [] for k in ("entry", "q_in", "first_s", "pages_after_q", "pair", "epilogue", "next_q", "end",
                              "pairs_per_lane")}
    for lane in lanes:
        if not lane:
            continue
        by = lambda s: [r[0] for r in lane if r[1] == s]  # noqa: E731
        phases["entry"].append(us(lane[0][0]))
        q, s, pairs, stored = by(Q_READY), by(S_READY), by(PAIR_END), by(STORED)
        if q:
            phases["q_in"].append((q[0] - lane[0][0]) / 1e3)
        if q and s:
            phases["first_s"].append((s[0] - q[0]) / 1e3)
        phases["pair"] += [(b - a) / 1e3 for a, b in zip(pairs, pairs[1:])]
        if pairs and stored:
            phases["epilogue"].append((stored[-1] - pairs[-1]) / 1e3)
        # A request boundary inside the part: its stores issued → the next request's Q ready.
        phases["next_q"] += [(b - a) / 1e3 for a, b in zip(stored, q[1:])]
        # Each request's Q ready → its first page's chunks all in (0 where they were in first).
        pages_in = by(PAGES_IN)
        for t_q in q:
            later = [t for t in pages_in if t >= t_q]
            if later:
                phases["pages_after_q"].append((later[0] - t_q) / 1e3)
        phases["end"].append(us(lane[-1][0]))
        phases["pairs_per_lane"].append(len(pairs))
    main_end = max(phases["end"])
    # What a balanced grid could win back: the share of the busy lanes' time from each lane's end
    # to the grid's, when their SMs stream nothing.
    busy_ends = [e for e, n in zip(phases["end"], phases["pairs_per_lane"]) if n > 0]
    tail_idle = sum(main_end - e for e in busy_ends) / (len(busy_ends) * main_end) if busy_ends else 0.0
    combine_us = {name: us(ns) for name, ns in zip(("combine_entry", "combine_waited", "combine_end"), combine)
                  if 0 < ns < 2**62}
    return {"phases": phases, "main_end": main_end, "tail_idle": tail_idle, **combine_us,
            "blocks": combine_blocks(combine, t0)}


def lane_end_model(raw_calls: list[dict]) -> dict:
    """Each busy lane's end fitted as a + b·pairs + c·requests over all calls (least squares), so
    that a request's fixed work reads in pairs (c / b); and how much of what is left is the SM's
    own: the correlation, over SMs, of their mean residual in even calls with that in odd calls."""
    rows, ends, sms, parity = [], [], [], []
    for i, call in enumerate(raw_calls):
        lanes = call["lanes"]
        t0 = first_entry(lanes)
        for lane in lanes:
            pairs = sum(r[1] == PAIR_END for r in lane)
            if pairs:
                rows.append([1.0, pairs, sum(r[1] == Q_READY for r in lane)])
                ends.append((lane[-1][0] - t0) / 1e3)
                sms.append(lane[0][2])
                parity.append(i % 2)
    x, y = torch.tensor(rows, dtype=torch.float64), torch.tensor(ends, dtype=torch.float64)
    coef = torch.linalg.lstsq(x, y[:, None]).solution.flatten()
    residual = (y - x @ coef).tolist()
    halves = ({}, {})
    for r, sm, half in zip(residual, sms, parity):
        halves[half].setdefault(sm, []).append(r)
    both = [sm for sm in halves[0] if sm in halves[1]]
    corr = (statistics.correlation([statistics.mean(halves[0][sm]) for sm in both],
                                   [statistics.mean(halves[1][sm]) for sm in both]) if len(both) > 2 else float("nan"))
    _, per_pair, per_request = coef.tolist()
    return {"per_pair": per_pair, "per_request": per_request, "residual_sd": statistics.pstdev(residual),
            "sm_split_half_corr": corr}


def critical_lane(lanes: list[list[tuple]]) -> list[tuple]:
    return max((lane for lane in lanes if lane), key=lambda lane: lane[-1][0])


def summarize(values: list[float]) -> str:
    """min, median, 90th percentile (nearest rank) and max: the slow tail is often the story."""
    if not values:
        return "-"
    v = sorted(values)
    p90 = v[min(len(v) - 1, -(-9 * len(v) // 10) - 1)]
    return f"min {v[0]:6.2f} med {statistics.median(v):6.2f} p90 {p90:6.2f} max {v[-1]:6.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--calls", type=int, default=10, help="timed calls after 10 warm-up calls")
    parser.add_argument("--json", help="write every call's raw stamps here")
    args = parser.parse_args()
    if not hasattr(torch.ops.mla_backend, "last_timeline"):
        raise SystemExit("mla_backend._C is not the MLA_TIMELINE=1 build (see this script's docstring)")

    seqlens = config_seqlens(args)
    inp = make_decode_inputs(seqlens, args.s_q, args.h_q, device="cuda", seed=1)
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, args.s_q * args.h_q, 1)
    run = lambda: mla_backend.flash_mla_with_kvcache(  # noqa: E731
        inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, tsm, splits, causal=args.s_q > 1,
        check_seqlens=False)
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    for _ in range(10):
        run()
    calls, raw = [], []
    for _ in range(args.calls):
        flush.zero_()
        run()
        torch.cuda.synchronize()
        stamps, combine = (t.cpu() for t in torch.ops.mla_backend.last_timeline())
        lanes = [decode_lane(stamps[i]) for i in range(stamps.shape[0])]
        calls.append(call_phases(lanes, combine.tolist()))
        raw.append({"lanes": lanes, "combine": combine[:COMBINE_STAMPS].tolist(),
                    "combine_blocks": calls[-1]["blocks"]})

    print(f"# b{len(seqlens)} s_q{args.s_q} h{args.h_q}, {tsm.shape[0]} parts, {splits[-1].item()} pieces, "
          f"{args.calls} calls; µs from the first CTA's entry")
    for k in ("main_end", "combine_entry", "combine_waited", "combine_end"):
        print(f"{k:<16} {summarize([c[k] for c in calls if k in c])}")
    print(f"tail idle %      {summarize([100 * c['tail_idle'] for c in calls])}  "
          "(busy lanes' share from their end to the grid's)")
    merged = {k: [v for c in calls for v in c["phases"][k]] for k in calls[0]["phases"]}
    for k, v in merged.items():
        print(f"lane {k:<14} {summarize(v)}  (over all lanes and calls)")
    fit = lane_end_model(raw)
    print(f"lane end fit     {fit['per_pair']:.2f} µs a pair, {fit['per_request']:.2f} µs a request "
          f"({fit['per_request'] / fit['per_pair']:.2f} pairs), residual sd {fit['residual_sd']:.2f} µs; "
          f"its SM's share: split-half corr {fit['sm_split_half_corr']:.2f}")
    blocks = [b for c in calls for b in c["blocks"]]
    if blocks:
        print(f"combine blocks that merge: {len(calls[-1]['blocks'])} a call; pieces "
              f"{summarize([float(b['pieces']) for b in blocks])}")
        for name, f in (("waited", lambda b: b["waited"]),
                        ("first batch after wait", lambda b: b["first_batch"] - b["waited"]),
                        ("merged after wait", lambda b: b["merged"] - b["waited"]),
                        ("exit after merged", lambda b: b["exit"] - b["merged"]),
                        ("exit", lambda b: b["exit"])):
            print(f"combine {name:<22} {summarize([f(b) for b in blocks])}")
        last = max(calls[-1]["blocks"], key=lambda b: b["exit"])
        sharing = sum(b["sm"] == last["sm"] for b in calls[-1]["blocks"])
        print(f"last call's latest combine block: {last} ({sharing} merging blocks on its SM)")
    lane = critical_lane(raw[-1]["lanes"])
    t0 = first_entry(raw[-1]["lanes"])
    shown = lane if len(lane) <= 24 else lane[:16] + lane[-6:]
    print("last call's latest lane (" + ("all" if shown is lane else "first 16 and last 6") + " stamps): "
          + ", ".join(f"{STAMP_NAMES[s]}({a}) {(ns - t0) / 1e3:.2f}" for ns, s, _, a in shown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seqlens": seqlens, "s_q": args.s_q, "h_q": args.h_q, "calls": raw}, f)


if __name__ == "__main__":
    main()
