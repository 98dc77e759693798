"""vLLM's CPU build: `examples/serve.sh` serves the CUSTOM backend through the reference path, and
bench_e2e's engine rounds run on it."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openai_server import check_openai_answers, free_port, served, wait_healthy

ROOT = Path(__file__).resolve().parent.parent


def _cpu_platform_reason():
    try:
        from vllm.platforms import current_platform
    except ImportError as e:
        return f"needs vLLM: {e}"
    return None if current_platform.is_cpu() else f"needs vLLM's CPU build (platform: {current_platform.device_type})"


_reason = _cpu_platform_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@pytest.fixture
def tiny_model(tmp_path):
    model = tmp_path / "tiny"
    subprocess.run([sys.executable, str(ROOT / "examples/make_tiny_deepseek_v3.py"), str(model), "--heads", "16",
                    "--layers", "2"], check=True)
    return model


def test_cpu_serve_answers_openai_requests(tmp_path, tiny_model):
    port, log = free_port(), tmp_path / "serve.log"
    with served(["bash", str(ROOT / "examples/serve.sh"), str(tiny_model), "--load-format", "dummy", "--port", str(port)],
                log) as server:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(server, base, log, timeout_s=400)
        check_openai_answers(base, str(tiny_model))
    assert "MLA on CPU: mla_backend.vllm.backend.MLADecodeBackend decode" in log.read_text()


@pytest.mark.parametrize("backends,take_turns,order", [
    ("CUSTOM", [], [(0, 0), (0, 1)]),
    # Two engines alive together; round 1 goes the other way round.
    ("CUSTOM,CUSTOM", ["--take-turns"], [(0, 0), (1, 0), (1, 1), (0, 1)]),
], ids=["one-engine", "two-engines-taking-turns"])
def test_bench_e2e_serves_rounds_from_engines_kept_alive(tmp_path, tiny_model, monkeypatch, backends, take_turns,
                                                         order):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    records_path = tmp_path / "rounds.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_e2e.py"), str(tiny_model), "--backends", backends,
                          *take_turns, "--rounds-per-engine", "2", "--input-len", "32", "--output-len", "8",
                          "--num-prompts", "4", "--max-model-len", "2048", "--vllm-args", "--enforce-eager --block-size 64",
                          "--json", str(records_path)], check=True, capture_output=True, text=True, timeout=600)
    out = run.stdout
    records = json.loads(records_path.read_text())
    assert [(r["backend"], r["engine"], r["round"]) for r in records] == [("CUSTOM", e, r) for e, r in order]
    assert all(r["taking_turns"] == bool(take_turns) for r in records)
    starts = [r["start_unix_s"] for r in records]  # the wall clock, where samples of the card are placed
    assert starts == sorted(starts) and all(b - a >= r["elapsed_s"] for a, b, r in zip(starts, starts[1:], records))
    assert all(r["utc_offset_s"] == time.localtime(r["start_unix_s"]).tm_gmtoff for r in records)
    for r in records:  # 4 prompts of 8 output tokens each
        assert r["output_tok_s"] > 0 and abs(r["output_tok_s"] * r["elapsed_s"] - 32) < 1e-6
        assert 0 < r["decode_phase_s"] < r["elapsed_s"]  # 7 decode steps after the prefill of all 4
        ramp = r["elapsed_s"] - r["decode_phase_s"]  # the engine core's clock read against the harness's
        assert 0 < r["handover_s"] < ramp and 0 < r["first_token_wait_s"] <= ramp
    summary_row = next(line for line in out.splitlines() if line.startswith("CUSTOM "))
    assert summary_row.split()[1] == str(len(backends.split(",")))  # the rounds of one engine are one sample
    for e in range(len(backends.split(","))):  # the engines' log passes through, with each start's seconds
        assert f"e2e_rounds: engine {e} (CUSTOM) started and warmed up in " in run.stderr
