#!/usr/bin/env python3
"""Times kernel builds against each other, alternated: a, b, a, b, ... each in its own process.

    python benchmarks/ab_builds.py main=/tmp/C_main.abi3.so new=mla_backend/_C.abi3.so \\
        [--alternations 2] [--json PATH] -- --configs skewed --rounds 2

Each build is a `_C.abi3.so`. It runs from a copy of this checkout's `mla_backend` and
`benchmarks` under --workdir, through `bench_decode.py --only ours` with the arguments after
`--`. A card at its power cap drifts between processes and between rounds (the H200 moved a
tensor-bound config by 20-30%), so builds take turns, and every sample is printed beside the
mean change against the first build.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_order(names: list[str], alternations: int) -> list[tuple[str, int]]:
    """(build, alternation) in the order they run: every build once per alternation."""
    return [(name, k) for k in range(alternations) for name in names]


def config_key(config: dict) -> str:
    size = f"sk{config['mean_seqlen']}" if "mean_seqlen" in config else f"n{len(config['seqlens'])}"
    return f"b{config['b']} s_q{config['s_q']} h{config['h_q']} {size}"


def collect(samples: dict, name: str, records: list[dict]) -> None:
    """Adds one run's `ours` records to samples[config][build]."""
    for r in records:
        if r["impl"] == "ours":
            samples.setdefault(config_key(r["config"]), {}).setdefault(name, []).append(r["us"])


def summary_lines(samples: dict, names: list[str]) -> list[str]:
    """A line a config: each build's samples in run order, then each later build's mean change."""
    lines = []
    for config, by_build in samples.items():
        line = f"{config:<22}"
        for name in names:
            line += f" | {name} " + " ".join(f"{us:.1f}" for us in by_build.get(name, []))
        base = by_build.get(names[0])
        for name in names[1:]:
            if base and by_build.get(name):
                line += f" | {name} {statistics.mean(by_build[name]) / statistics.mean(base) - 1:+.1%}"
        lines.append(line)
    return lines


def stage_build(name: str, library: Path, workdir: Path) -> Path:
    """A copy of the package and the benchmarks with this build's library in it."""
    folder = workdir / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ROOT / "mla_backend", folder / "mla_backend", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(ROOT / "benchmarks", folder / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    shutil.copy2(library, folder / "mla_backend" / "_C.abi3.so")
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", help="NAME=PATH to a _C.abi3.so; the first is the baseline")
    parser.add_argument("--alternations", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ab_builds")
    parser.add_argument("--json", help="write every sample to this path")
    argv = sys.argv[1:]
    bench_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    builds = {}
    for spec in args.builds:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"build {spec!r}: expected NAME=PATH to an existing _C.abi3.so")
        builds[name] = stage_build(name, Path(path), args.workdir)
    names = list(builds)

    samples = {}
    for name, k in run_order(names, args.alternations):
        out = builds[name] / f"run{k}.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(builds[name]), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "benchmarks/bench_decode.py", "--only", "ours", "--json", str(out), *bench_args],
                       cwd=builds[name], env=env, check=True, stdout=subprocess.DEVNULL)
        collect(samples, name, json.loads(out.read_text()))
        print(f"# {name} run {k + 1} of {args.alternations} done", flush=True)
    print("\n".join(summary_lines(samples, names)))
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=1))


if __name__ == "__main__":
    main()
