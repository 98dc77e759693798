#!/usr/bin/env python3
"""Rounds of bench_e2e's workload from vLLM engines kept alive (run by `bench_e2e.py --rounds-per-engine`).

    python benchmarks/e2e_rounds.py --backends CUSTOM[,FLASHMLA] --rounds 3
        [--input-len 2048 --output-len 512 --num-prompts 600] [--no-warmup] -- --model MODEL --load-format dummy ...

`vllm bench throughput` starts an engine for a single timed run, and on the GPU host the start
(compilation, CUDA-graph capture) takes several times longer than the run itself. Here each
backend gets one engine, and that engine serves several rounds. Each round sends fresh random
prompts, so that no round hits another's prefix cache. It times `llm.generate` as `vllm bench
throughput` does: with `ignore_eos`, `temperature=1.0`, and all prompts queued at once. After each
round it prints one line, `ROUND {json}`.

With several backends, the engines take turns: round r runs every backend once, in an order
rotated by r. So each round pairs the backends a minute apart on the same host. Separate calls
would pair them many minutes apart, and the GPU host's throughput drifts by up to 12% between
rounds. Where the platform has vLLM's sleep mode (CUDA), an engine sleeps between its turns: it
gives back its KV cache and leaves the whole card to the engine whose turn it is. Every engine
should then be started with the same `--gpu-memory-utilization`, low enough that a waking engine
fits beside the others' sleeping remains (0.85 on a 141 GB H200). Without sleep mode (CPU), the
engines share the memory and run as they are.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from contextlib import contextmanager
from typing import NamedTuple

ROUND_PREFIX = "ROUND "


class Workload(NamedTuple):
    num_prompts: int
    input_len: int
    output_len: int


WARMUP = Workload(num_prompts=16, input_len=256, output_len=32)  # fills the compile and Triton caches


def random_prompts(vocab_size: int, num_prompts: int, input_len: int, seed: int) -> list[list[int]]:
    """num_prompts token-id lists of input_len ids each, uniform over the vocabulary."""
    import random

    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(input_len)] for _ in range(num_prompts)]


class RoundTimes(NamedTuple):
    start_unix_s: float
    elapsed_s: float
    output_tokens: int
    decode_phase_s: float | None
    handover_s: float | None
    first_token_wait_s: float | None


def timed_generate(llm, prompts: list[list[int]], output_len: int) -> RoundTimes:
    """One llm.generate over the prompts: when it started on the wall clock (so that samples of the
    card taken beside the run can be placed in it), its seconds, the output tokens it produced, and
    where its time went by the engine's own request timestamps (round_phases)."""
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=output_len)
    requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    gc.collect()  # the last turn's garbage, collected before the clock starts rather than inside this round
    start_unix = time.time()
    start = time.monotonic()  # the engine core's clock, so that its timestamps can be read against it
    outputs = llm.generate(requests, params, use_tqdm=False)
    elapsed = time.monotonic() - start
    output_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return RoundTimes(start_unix, elapsed, output_tokens, *round_phases(outputs, start))


def round_phases(outputs, start: float) -> tuple[float | None, float | None, float | None]:
    """(decode_phase_s, handover_s, first_token_wait_s) from the engine's request timestamps (None
    each where the engine kept none: stats off), all on time.monotonic's clock as `start` is.

    decode_phase_s: from the last request's first token to the last token of all; the steps with no
    prefill left, the batch at its fullest and then shrinking. The rest of a round is the prefill
    ramp, where decodes ride along with prompt chunks.
    handover_s: from the start until the engine core had queued the last request.
    first_token_wait_s: the longest wait, from the start, for the next request's first token; a stall
    inside the ramp shows here, a ramp slow throughout does not."""
    stats = [o.metrics for o in outputs]
    if not stats or any(s is None or not s.first_token_ts for s in stats):
        return None, None, None
    first_tokens = sorted(s.first_token_ts for s in stats)
    decode_phase = max(s.last_token_ts for s in stats) - first_tokens[-1]
    handover = max(s.queued_ts for s in stats) - start if all(s.queued_ts for s in stats) else None
    waits = [b - a for a, b in zip([start, *first_tokens], first_tokens)]
    return decode_phase, handover, max(waits)


@contextmanager
def logged_seconds(message: str):
    """One line on stderr with the seconds the step inside took, so that a run cut short shows where
    its time went."""
    start = time.perf_counter()
    yield
    print(f"e2e_rounds: {message} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def rotated(backends: list[str], r: int) -> list[tuple[int, str]]:
    """(engine, backend) in the order they take round r: rotated by r, so no backend always goes first."""
    return [(e % len(backends), backends[e % len(backends)]) for e in range(r, r + len(backends))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", required=True, help="attention backends, one engine each, comma-separated")
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--input-len", type=int, default=2048)
    parser.add_argument("--output-len", type=int, default=512)
    parser.add_argument("--num-prompts", type=int, default=600)
    parser.add_argument("--no-warmup", action="store_true")
    args, engine_argv = parser.parse_known_args()
    if engine_argv[:1] == ["--"]:
        engine_argv = engine_argv[1:]
    backends = args.backends.split(",")

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    sleeps = len(backends) > 1 and current_platform.is_sleep_mode_available()
    cli = EngineArgs.add_cli_args(FlexibleArgumentParser())
    engines = []
    for engine, backend in enumerate(backends):
        argv = [*engine_argv, "--attention-backend", backend, *(["--enable-sleep-mode"] if sleeps else [])]
        with logged_seconds(f"engine {engine} ({backend}) started and warmed up"):
            llm = LLM.from_engine_args(EngineArgs.from_cli_args(cli.parse_args(argv)))
            vocab_size = llm.llm_engine.model_config.get_vocab_size()  # one model: the same for every engine
            if not args.no_warmup:
                timed_generate(llm, random_prompts(vocab_size, WARMUP.num_prompts, WARMUP.input_len, seed=-1),
                               WARMUP.output_len)
        if sleeps:
            with logged_seconds(f"engine {engine} slept"):
                llm.sleep(level=1)
        engines.append(llm)
    for r in range(args.rounds):
        prompts = random_prompts(vocab_size, args.num_prompts, args.input_len, seed=r)
        for engine, backend in rotated(backends, r):
            llm = engines[engine]
            if sleeps:
                with logged_seconds(f"engine {engine} woke"):
                    llm.wake_up()
            times = timed_generate(llm, prompts, args.output_len)
            if sleeps:
                with logged_seconds(f"engine {engine} slept"):
                    llm.sleep(level=1)
            record = {"backend": backend, "engine": engine, "round": r, "start_unix_s": times.start_unix_s,
                      "utc_offset_s": time.localtime(times.start_unix_s).tm_gmtoff, "elapsed_s": times.elapsed_s,
                      "decode_phase_s": times.decode_phase_s, "handover_s": times.handover_s,
                      "first_token_wait_s": times.first_token_wait_s,
                      "output_tok_s": times.output_tokens / times.elapsed_s,
                      "total_tok_s": (times.output_tokens + args.num_prompts * args.input_len) / times.elapsed_s}
            print(ROUND_PREFIX + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
