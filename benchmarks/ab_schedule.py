#!/usr/bin/env python3
"""Times one decode config under several tile schedules, interleaved in one process:

    python benchmarks/ab_schedule.py --e2e-batch 64 --h-q 128 pour gpu
    python benchmarks/ab_schedule.py --b 128 --s-q 7 --h-q 128 --mean 8192 model parts=28

The kernel is the same for every schedule; only its metadata differs, so separate builds and
processes (whose timings drift by a few percent) are not needed for a scheduler change.
Schedules: `gpu` (the shipped scheduler kernel), `model` (its Python model), `pour` (the model
without the one-request-a-part rule), `parts=N` (the model over N parts), `fixed=H` and
`slack=H` (a request's fixed cost and a part's slack, in half page pairs); join with `+`,
e.g. `pour+parts=66` or `fixed=3+slack=2`. Prints medians over --rounds rounds of `do_bench`
and the change against the first schedule.
"""
from __future__ import annotations

import argparse
import statistics

import torch

import mla_backend
from mla_backend import reference
from mla_backend.testing import cal_diff, make_decode_inputs


# Schedule tokens `fixed=H` and `slack=H`: reference.schedule_parts' costs in half page pairs.
COST_OPTIONS = {"fixed": "fixed_cost_half_pairs", "slack": "slack_half_pairs"}


def model_metadata(seqlens: list[int], num_q_tokens_per_head_k: int, schedule: str,
                   num_sms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Metadata of a model schedule (`model`, `pour`, `parts=N`, `fixed=H`, `slack=H`, joined with `+`),
    on the CPU."""
    parts = reference.num_sm_parts(num_sms, num_q_tokens_per_head_k, 1)
    options = {"whole_requests": True}
    for token in schedule.split("+"):
        name, _, value = token.partition("=")
        if token == "pour":
            options["whole_requests"] = False
        elif name == "parts":
            parts = int(value)
        elif name in COST_OPTIONS:
            options[COST_OPTIONS[name]] = int(value)
        elif token != "model":
            raise ValueError(f"unknown schedule {token!r}: expected gpu, model, pour, parts=N, fixed=H or slack=H")
    rows, num_splits = reference.schedule_parts(seqlens, parts, **options)
    return (torch.tensor(rows, dtype=torch.int32).view(parts, reference.METADATA_FIELDS),
            torch.tensor(num_splits, dtype=torch.int32))


def main():
    import triton
    from bench_decode import add_config_args, config_seqlens  # this folder, on sys.path when run as a script

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("schedules", nargs="+")
    parser.add_argument("--rounds", type=int, default=9)
    add_config_args(parser)
    args = parser.parse_args()

    seqlens = config_seqlens(args)
    inp = make_decode_inputs(seqlens, args.s_q, args.h_q, device="cuda", seed=1)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = args.s_q * args.h_q
    runs, splits = {}, {}
    for schedule in args.schedules:
        if schedule == "gpu":
            tsm, num_splits = mla_backend.get_mla_metadata(inp.cache_seqlens, rows, 1)
        else:
            tsm, num_splits = (t.to(inp.q.device) for t in model_metadata(seqlens, rows, schedule, num_sms))
        splits[schedule] = int((num_splits[1:] - num_splits[:-1] > 1).sum())
        runs[schedule] = (lambda tsm=tsm, num_splits=num_splits: mla_backend.flash_mla_with_kvcache(
            inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, tsm, num_splits,
            causal=args.s_q > 1, check_seqlens=False))
    first = args.schedules[0]
    out_first = runs[first]()[0]
    times = {s: [] for s in runs}
    for _ in range(args.rounds):
        for s, run in runs.items():
            times[s].append(triton.testing.do_bench(run, warmup=20, rep=100, return_mode="median") * 1e3)
    base = statistics.median(times[first])
    print(f"# {torch.cuda.get_device_name()} | b{len(seqlens)} s_q{args.s_q} h{args.h_q} | {args.rounds} rounds")
    for s, t in times.items():
        us = statistics.median(t)
        print(f"{s:<16} {us:9.1f} us  {us / base - 1:+6.1%}  spread {max(t) / min(t) - 1:5.1%}  "
              f"split requests {splits[s]:4d}  cos vs {first} {cal_diff(runs[s]()[0], out_first)[0]:.1e}")


if __name__ == "__main__":
    main()
