#!/usr/bin/env python3
"""SGLang serving throughput: `--attention-backend mla_backend` (ours) beside `flashmla`, in one call.

    python benchmarks/bench_sglang_serving.py MODEL_DIR [--json benchmarks/results/sglang_h100.json]

For each backend it starts `python -m sglang.launch_server` (page size 64, dummy weights),
waits for /health, runs SGLang's serving benchmark (`sglang.benchmark.serving`, random token
ids, fixed lengths, all prompts at once) against it, stops it, and prints output tokens/s
with the ratio ours / peer.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from openai_server import free_port, served, wait_healthy  # noqa: E402

BACKENDS = ["mla_backend", "flashmla"]


def serve_and_bench(model: str, backend: str, args, workdir: Path) -> dict:
    port = free_port()
    log = workdir / f"server_{backend}.log"
    server_cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--attention-backend",
                  backend, "--page-size", "64", "--load-format", "dummy", "--port", str(port),
                  "--mem-fraction-static", str(args.mem_fraction), "--context-length", str(args.context_length)]
    result = workdir / f"bench_{backend}.jsonl"
    bench_cmd = [sys.executable, "-m", "sglang.benchmark.serving", "--backend", "sglang", "--host", "127.0.0.1",
                 "--port", str(port), "--model", model, "--dataset-name", "random-ids", "--random-input-len",
                 str(args.input_len), "--random-output-len", str(args.output_len), "--random-range-ratio", "1.0",
                 "--num-prompts", str(args.num_prompts), "--warmup-requests", "8", "--disable-tqdm",
                 "--output-file", str(result)]
    print("$ " + " ".join(server_cmd), flush=True)
    with served(server_cmd, log) as server:
        wait_healthy(server, f"http://127.0.0.1:{port}", log, timeout_s=args.start_timeout)
        print("$ " + " ".join(bench_cmd), flush=True)
        proc = subprocess.run(bench_cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not result.exists():
            sys.stderr.write((proc.stdout + proc.stderr)[-6000:] + open(log).read()[-4000:])
            raise RuntimeError(f"sglang.benchmark.serving failed against {backend} (exit {proc.returncode})")
    row = json.loads(result.read_text().splitlines()[-1])
    return {"backend": backend, "input_len": args.input_len, "output_len": args.output_len,
            "num_prompts": args.num_prompts, "completed": row["completed"],
            "output_tok_s": row["output_throughput"], "total_tok_s": row["total_throughput"],
            "median_tpot_ms": row["median_tpot_ms"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--input-len", type=int, default=2048)
    parser.add_argument("--output-len", type=int, default=512)
    parser.add_argument("--num-prompts", type=int, default=600)
    parser.add_argument("--context-length", type=int, default=4096)
    parser.add_argument("--mem-fraction", type=float, default=0.8)
    parser.add_argument("--start-timeout", type=float, default=400)
    parser.add_argument("--json", help="write the records (list of dicts) to this path")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        records = [serve_and_bench(args.model, b, args, Path(tmp)) for b in args.backends.split(",")]
    ours = next((r for r in records if r["backend"] == "mla_backend"), None)
    print(f"\n{'backend':<12} {'done':>5} {'output tok/s':>13} {'total tok/s':>12} {'TPOT ms':>8}  ours/backend")
    for r in records:
        ratio = f"{ours['output_tok_s'] / r['output_tok_s']:.3f}" if ours else ""
        print(f"{r['backend']:<12} {r['completed']:>5} {r['output_tok_s']:>13.1f} {r['total_tok_s']:>12.1f} "
              f"{r['median_tpot_ms']:>8.2f}  {ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
