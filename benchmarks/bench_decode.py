#!/usr/bin/env python3
"""MLA decode timing: ours beside vLLM's FlashMLA and FA3-MLA kernels and FlashInfer's MLA, same inputs, same run.

    python benchmarks/bench_decode.py [--json PATH] [--sq-sweep] [--only NAME] [--configs all|flashmla|skewed|e2e]
                                      [--e2e-heads H] [--rounds N] [--q-apart] [--l2 dirty|clean] [--graph-layers N]

FLOPs and bytes follow FlashMLA's benchmark: FLOPs = 2*s_q*sum(seqlen)*h_q*(576+512),
bytes = 2*(sum(seqlen)*576 + b*s_q*h_q*(576+512)). Times are triton do_bench medians
(L2 flushed before every call); the implementations' order rotates from config to config
(and from round to round with --rounds N). do_bench flushes by zeroing 256 MB, which leaves
L2 full of dirty lines that the timed call writes back as it reads; --l2 clean flushes by
reading 256 MB instead, as after a layer whose writes were small. --graph-layers N times a CUDA
graph of N layers instead, each rewriting q (as the engine's q projection does) and then calling,
and reports µs a layer: the kernels' launches then follow one another as in a captured decode
step, which the flushes between do_bench's calls hide. --q-apart hands each implementation q
as vLLM's MLA layer hands it to that implementation's backend (latent and rope columns apart;
FlashMLA's backend concatenates them, and that copy is in its time). Ratios are peer time / our
time: > 1 means we are faster.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys

import torch
import triton

import mla_backend
from mla_backend.testing import cal_diff, engine_query, make_decode_inputs, varlen_seqlens

SKEWED_SEQLENS = [4641, 45118, 1730, 1696]


def flashmla_configs():
    for mean in (4096, 8192, 16384):
        for s_q in (1, 2):
            for h_q in (16, 32, 64, 128):
                yield dict(b=128, s_q=s_q, h_q=h_q, mean_seqlen=mean, varlen=True)


def e2e_shape_configs(h_q: int = 128):
    """The decode steps of bench_e2e.py's workload: s_q 1, contexts 2048-2560 tokens; h_q 128 as
    in the tiny model on one GPU, or 16 as in one GPU's shard of DeepSeek-V3 at TP 8.

    vLLM's default on an 80 GB card admits up to 1024 requests, so that workload's decode steps
    hold all 600 of its requests: b600 is the shape it runs most."""
    rng = random.Random(0)
    for b in (64, 128, 256, 600):
        yield dict(b=b, s_q=1, h_q=h_q, seqlens=[rng.randint(2048, 2560) for _ in range(b)], varlen=True)


def sq_sweep_configs():
    for h_q in (16, 128):
        for s_q in range(1, 9):
            yield dict(b=128, s_q=s_q, h_q=h_q, mean_seqlen=8192, varlen=True)


def short_context_configs():
    """Contexts of a few pairs of pages a part, where a part's pages come in bursts (DESIGN,
    "Thirteenth session")."""
    for b in (32, 128):
        for mean in (512, 1024):
            for h_q in (16, 128):
                yield dict(b=b, s_q=1, h_q=h_q, mean_seqlen=mean, varlen=True)


def seqlens_of(config) -> list[int]:
    if "seqlens" in config:
        return config["seqlens"]
    return varlen_seqlens(config["b"], config["mean_seqlen"], config["s_q"], seed=config["mean_seqlen"])


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """One decode config on the command line (profile_decode.py, ab_schedule.py)."""
    parser.add_argument("--b", type=int, default=128)
    parser.add_argument("--s-q", type=int, default=1)
    parser.add_argument("--h-q", type=int, default=16)
    parser.add_argument("--mean", type=int, default=8192)
    parser.add_argument("--seqlens", help="comma-separated seqlens; overrides --b and --mean")
    parser.add_argument("--e2e-batch", type=int, choices=[64, 128, 256, 600],
                        help="the seqlens of the e2e shape of this batch; overrides --b and --mean")


def config_seqlens(args: argparse.Namespace) -> list[int]:
    """The seqlens that add_config_args' arguments name."""
    if args.e2e_batch:
        return next(c["seqlens"] for c in e2e_shape_configs() if c["b"] == args.e2e_batch)
    if args.seqlens:
        return [int(v) for v in args.seqlens.split(",")]
    return seqlens_of(dict(b=args.b, s_q=args.s_q, mean_seqlen=args.mean))


# Each implementation takes q whole, or with apart = engine_query(q) as its vLLM backend does:
# ours and FA3-MLA read the two parts where they lie, FlashMLA concatenates them first, inside the
# timed call. FlashInfer's wrapper gets contiguous parts made outside the timed call either way
# (vLLM's FlashInfer MLA backend runs on sm_100 only).
def ours(inp, s_q, h_q, causal, apart=None):
    tsm, splits = mla_backend.get_mla_metadata(inp.cache_seqlens, s_q * h_q, 1)
    q, q_pe = apart or (inp.q, None)
    return lambda: mla_backend.flash_mla_with_kvcache(q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512,
                                                      tsm, splits, causal=causal, q_pe=q_pe, check_seqlens=False)


def vllm_flashmla(inp, s_q, h_q, causal, apart=None):
    from vllm.v1.attention.ops import flashmla

    sched, _ = flashmla.get_mla_metadata()
    return lambda: flashmla.flash_mla_with_kvcache(torch.cat(apart, dim=-1) if apart else inp.q, inp.k_cache,
                                                   inp.block_table, inp.cache_seqlens, 512, sched, None,
                                                   causal=causal)


def vllm_fa3_mla(inp, s_q, h_q, causal, apart=None):
    from vllm.vllm_flash_attn import flash_attn_varlen_func, get_scheduler_metadata

    b = inp.q.shape[0]
    q_nope, q_pe = (t.view(b * s_q, h_q, -1) for t in apart or (inp.q[..., :512], inp.q[..., 512:]))
    cu_seqlens_q = torch.arange(0, b + 1, dtype=torch.int32, device=q_pe.device) * s_q
    max_seqlen_k = int(inp.cache_seqlens.max())
    meta = get_scheduler_metadata(batch_size=b, max_seqlen_q=s_q, max_seqlen_k=max_seqlen_k, num_heads_q=h_q,
                                  num_heads_kv=1, headdim=64, cache_seqlens=inp.cache_seqlens, qkv_dtype=q_pe.dtype,
                                  headdim_v=512, page_size=64, cu_seqlens_q=cu_seqlens_q, causal=causal)

    def run():
        out, lse = flash_attn_varlen_func(
            q=q_pe, k=inp.k_cache[..., 512:], v=inp.k_cache[..., :512], q_v=q_nope,
            max_seqlen_q=s_q, cu_seqlens_q=cu_seqlens_q, max_seqlen_k=max_seqlen_k, seqused_k=inp.cache_seqlens,
            block_table=inp.block_table, softmax_scale=576 ** -0.5, causal=causal, return_softmax_lse=True,
            fa_version=3, scheduler_metadata=meta)
        return out.view(b, s_q, h_q, 512), lse

    return run


def flashinfer_mla(inp, s_q, h_q, causal, apart=None):
    import flashinfer

    b = inp.q.shape[0]
    dev = inp.q.device
    pages = (inp.cache_seqlens + 63) // 64
    kv_indptr = torch.zeros(b + 1, dtype=torch.int32, device=dev)
    kv_indptr[1:] = torch.cumsum(pages, 0)
    used = torch.arange(inp.block_table.shape[1], device=dev)[None, :] < pages[:, None]
    wrapper = flashinfer.mla.BatchMLAPagedAttentionWrapper(torch.empty(256 << 20, dtype=torch.int8, device=dev))
    wrapper.plan(torch.arange(b + 1, dtype=torch.int32, device=dev) * s_q, kv_indptr, inp.block_table[used],
                 inp.cache_seqlens, h_q, 512, 64, 64, causal, 576 ** -0.5, inp.q.dtype, inp.k_cache.dtype)
    q_nope, q_pe = (t.reshape(b * s_q, h_q, -1).contiguous() for t in apart or (inp.q[..., :512], inp.q[..., 512:]))
    ckv, kpe = inp.k_cache[:, :, 0, :512], inp.k_cache[:, :, 0, 512:]

    def run():
        out, lse = wrapper.run(q_nope, q_pe, ckv, kpe, return_lse=True)
        return out.view(b, s_q, h_q, 512), lse

    return run


IMPLS = {"ours": ours, "flashmla": vllm_flashmla, "fa3_mla": vllm_fa3_mla, "flashinfer_mla": flashinfer_mla}


def available_impls(only: str | None) -> dict:
    impls = {}
    for name, make in IMPLS.items():
        if only and name not in only.split(","):
            continue
        if name != "ours":
            try:
                if name == "flashmla":
                    from vllm.v1.attention.ops import flashmla
                    ok, why = flashmla.is_flashmla_dense_supported()
                    if not ok:
                        raise RuntimeError(why)
                elif name == "fa3_mla":
                    from vllm.vllm_flash_attn import flash_attn_varlen_func  # noqa: F401
                else:
                    import flashinfer.mla  # noqa: F401
            except Exception as e:  # vLLM absent or its kernel not built for this card
                print(f"# {name}: not timed ({type(e).__name__}: {e})", file=sys.stderr)
                continue
        impls[name] = make
    return impls


def describe(config) -> str:
    if "seqlens" in config:
        return f"b{config['b']} s_q{config['s_q']} h{config['h_q']} seqlens={config['seqlens']}"
    return f"b{config['b']} s_q{config['s_q']} h{config['h_q']} sk{config['mean_seqlen']}"


def impl_order(names: list[str], index: int) -> list[str]:
    """`names` rotated by `index`: the card's clock falls under sustained load (at its power cap),
    so no implementation should always be timed first."""
    k = index % len(names) if names else 0
    return names[k:] + names[:k]


def event_median_us(fn, reps: int, before=None) -> float:
    """Median µs of `reps` calls of fn, each timed between two events; `before` runs untimed ahead of each."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        if before is not None:
            before()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3


def clean_l2_median_us(fn, reps: int = 200, warmup: int = 20) -> float:
    """Median of `reps` calls, each timed with events after a read of 256 MB (L2 then clean)."""
    flush = torch.empty(2**26, dtype=torch.int32, device="cuda")
    for _ in range(warmup):
        fn()
    return event_median_us(fn, reps, before=flush.amax)


def graph_layer_us(fn, q: torch.Tensor, layers: int, reps: int = 20) -> float:
    """µs a layer: median over `reps` replays of a CUDA graph of `layers` (q rewritten, fn called)."""
    q_src = q.clone()

    def layer():
        q.copy_(q_src)
        fn()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture, as torch.cuda.graphs asks
        for _ in range(3):
            layer()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(layers):
            layer()
    graph.replay()
    return event_median_us(graph.replay, reps) / layers


def median_us(fn, l2: str) -> float:
    if l2 == "clean":
        return clean_l2_median_us(fn)
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median") * 1e3


def bench_config(config, impls, records, index=0, rounds=1, l2="dirty", graph_layers=0, q_apart=False):
    """Times every implementation on one config: `rounds` rounds, each in rotated order, medians;
    single calls, or with graph_layers > 0 layers of a CUDA graph; q whole, or with q_apart laid
    out as vLLM's MLA layer hands it over (engine_query)."""
    s_q, h_q = config["s_q"], config["h_q"]
    seqlens = seqlens_of(config)
    causal = s_q > 1
    inp = make_decode_inputs(seqlens, s_q, h_q, device="cuda", seed=1)
    apart = engine_query(inp.q) if q_apart else None
    total = sum(seqlens)
    flops = 2 * s_q * total * h_q * (576 + 512)
    nbytes = 2 * (total * 576 + len(seqlens) * s_q * h_q * (576 + 512))
    fns, outputs = {}, {}
    for name, make in impls.items():
        try:
            fns[name] = make(inp, s_q, h_q, causal, apart)
            outputs[name] = fns[name]()
        except Exception as e:  # a peer that cannot run this config is reported, not fatal
            print(f"# {describe(config)}: {name} failed ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr)
            fns.pop(name, None)
    samples = {name: [] for name in fns}
    for r in range(rounds):
        for name in impl_order(list(fns), index + r):
            if not graph_layers:
                samples[name].append(median_us(fns[name], l2))
                continue
            try:
                samples[name].append(graph_layer_us(fns[name], inp.q, graph_layers))
            except RuntimeError as e:  # a peer that cannot be captured is reported, not fatal
                print(f"# {describe(config)}: {name} failed in a CUDA graph ({str(e)[:200]})", file=sys.stderr)
                del fns[name]
    results = {name: statistics.median(samples[name]) for name in fns}
    timing = f"graph{graph_layers}" if graph_layers else l2
    for name, us in results.items():
        records.append({"config": config, "impl": name, "us": round(us, 2), "l2": timing,
                        "tflops": round(flops / us / 1e6, 1), "gbps": round(nbytes / us / 1e3, 1),
                        **({"q": "apart"} if q_apart else {})})
    line = f"{describe(config):<30}"
    ours_us = results.get("ours")
    for name, us in results.items():
        line += f" | {name} {us:8.1f} us {flops / us / 1e6:6.1f} TF {nbytes / us / 1e3:7.1f} GB/s"
        if name != "ours" and ours_us:
            line += f" x{us / ours_us:.2f}"
    if "ours" in outputs and "flashmla" in outputs:
        cos = cal_diff(outputs["ours"][0], outputs["flashmla"][0])[0]
        line += f" | cos(ours,flashmla) {cos:.1e}"
    print(line, flush=True)
    del inp, outputs
    torch.cuda.empty_cache()


def selected_configs(which: str, sq_sweep: bool = False, match: str | None = None, e2e_heads: int = 128) -> list[dict]:
    """The configs that --configs, --sq-sweep and --match name, in run order, each once."""
    configs = []
    if which in ("all", "flashmla"):
        configs += list(flashmla_configs())
    if which in ("all", "skewed"):
        configs.append(dict(b=4, s_q=4, h_q=16, seqlens=SKEWED_SEQLENS, varlen=True))
    if which == "e2e":
        configs += list(e2e_shape_configs(e2e_heads))
    if which == "short":
        configs += list(short_context_configs())
    if sq_sweep:
        configs += list(sq_sweep_configs())
    unique = {}
    for c in configs:  # a config in two sets runs once, at its first place
        unique.setdefault(describe(c), c)
    return [c for name, c in unique.items() if not match or re.search(match, name)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the records to this path")
    parser.add_argument("--sq-sweep", action="store_true", help="also s_q 1..8 at h_q 16 and 128, sk8192")
    parser.add_argument("--only", help="comma-separated subset of: " + ",".join(IMPLS))
    parser.add_argument("--configs", default="all", choices=["all", "flashmla", "skewed", "e2e", "short"],
                        help="e2e: only the decode shapes of bench_e2e.py's workload; short: contexts of 512 and 1024")
    parser.add_argument("--e2e-heads", type=int, default=128,
                        help="h_q of the e2e shapes: 128 (tiny model, one GPU) or 16 (DeepSeek-V3 at TP 8)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds per config, each in rotated order; the median of the rounds is reported")
    parser.add_argument("--match", help="only the configs whose description (as printed) matches this regex")
    parser.add_argument("--l2", default="dirty", choices=["dirty", "clean"],
                        help="L2 before each call: dirty (do_bench's zeroing flush) or clean (a read flush)")
    parser.add_argument("--graph-layers", type=int, default=0,
                        help="time a CUDA graph of this many layers (q rewritten, then the call) instead; us a layer")
    parser.add_argument("--q-apart", action="store_true",
                        help="q's latent and rope columns apart, as vLLM's MLA layer hands them over; "
                             "FlashMLA concatenates them inside its timed call, as its vLLM backend does")
    args = parser.parse_args()
    if args.q_apart and args.graph_layers:
        parser.error("--q-apart times single calls; it does not combine with --graph-layers")

    timing = f"a CUDA graph of {args.graph_layers} layers, us a layer" if args.graph_layers else f"L2 {args.l2}"
    timing += ", q apart as vLLM hands it over" if args.q_apart else ""
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | {timing} | ratios are peer us / our us")
    impls = available_impls(args.only)
    configs = selected_configs(args.configs, args.sq_sweep, args.match, args.e2e_heads)
    records = []
    for index, config in enumerate(configs):
        bench_config(config, impls, records, index, args.rounds, args.l2, args.graph_layers, args.q_apart)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
