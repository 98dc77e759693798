#!/usr/bin/env python3
"""Rounds of bench_e2e's workload in one vLLM engine (run by `bench_e2e.py --rounds-per-engine`).

    python benchmarks/e2e_rounds.py --rounds 3 [--input-len 2048 --output-len 512 --num-prompts 600]
        [--no-warmup] -- --model MODEL --load-format dummy --attention-backend CUSTOM ...

`vllm bench throughput` starts an engine for a single timed run, and on the GPU host the start
(compilation, CUDA-graph capture) takes several times longer than the run itself. Here one engine
serves several rounds. Each round sends fresh random prompts, so that no round hits another's
prefix cache, and times `llm.generate` as `vllm bench throughput` does: with `ignore_eos`,
`temperature=1.0`, and all prompts queued at once. After each round it prints one line,
`ROUND {json}`.
"""
from __future__ import annotations

import argparse
import json
import time
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


def timed_generate(llm, prompts: list[list[int]], output_len: int) -> tuple[float, int]:
    """Seconds for one llm.generate over the prompts, and the output tokens it produced."""
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=output_len)
    start = time.perf_counter()
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    return elapsed, sum(len(o.outputs[0].token_ids) for o in outputs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--input-len", type=int, default=2048)
    parser.add_argument("--output-len", type=int, default=512)
    parser.add_argument("--num-prompts", type=int, default=600)
    parser.add_argument("--no-warmup", action="store_true")
    args, engine_argv = parser.parse_known_args()
    if engine_argv[:1] == ["--"]:
        engine_argv = engine_argv[1:]

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    engine_args = EngineArgs.from_cli_args(EngineArgs.add_cli_args(FlexibleArgumentParser()).parse_args(engine_argv))
    llm = LLM.from_engine_args(engine_args)
    vocab_size = llm.llm_engine.model_config.get_vocab_size()
    if not args.no_warmup:
        timed_generate(llm, random_prompts(vocab_size, WARMUP.num_prompts, WARMUP.input_len, seed=-1),
                       WARMUP.output_len)
    for r in range(args.rounds):
        prompts = random_prompts(vocab_size, args.num_prompts, args.input_len, seed=r)
        elapsed, output_tokens = timed_generate(llm, prompts, args.output_len)
        record = {"round": r, "elapsed_s": elapsed, "output_tok_s": output_tokens / elapsed,
                  "total_tok_s": (output_tokens + args.num_prompts * args.input_len) / elapsed}
        print(ROUND_PREFIX + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
