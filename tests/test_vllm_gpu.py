"""The vLLM backend on an sm_90 GPU: against vLLM's FLASHMLA backend, and served over HTTP."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mla_backend.testing import cal_diff, make_decode_inputs, sm90_skip_reason
from openai_server import check_openai_answers, free_port, served, wait_healthy

ROOT = Path(__file__).resolve().parent.parent

try:
    from vllm.v1.attention.ops.flashmla import is_flashmla_dense_supported
    _reason = sm90_skip_reason() or is_flashmla_dense_supported()[1]
except ImportError as e:
    _reason = f"needs vLLM: {e}"
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_dsv3")
    subprocess.run([sys.executable, str(ROOT / "examples/make_tiny_deepseek_v3.py"), str(out), "--layers", "2"],
                   check=True)
    return str(out)


@pytest.mark.parametrize("s_q", [1, 2])
def test_forward_mqa_matches_flashmla_backend(s_q):
    from vllm.v1.attention.backends.mla.flashmla import FlashMLADecodeMetadata, FlashMLAImpl
    from vllm.v1.attention.ops.flashmla import FlashMLASchedMeta

    from mla_backend.schedule import DecodeSchedule
    from mla_backend.vllm.backend import MLADecodeImpl, MLADecodeMetadata

    h_q, seqlens = 128, [s_q, 700, 4096, 63, 9000]  # spec decode has seqlen >= s_q
    inp = make_decode_inputs(seqlens, s_q, h_q, device="cuda", seed=s_q)
    q = inp.q.view(-1, h_q, 576)
    kv_cache = inp.k_cache.squeeze(2)  # vLLM's MLA cache: [num_blocks, 64, 576]

    impls = {}
    for cls in (MLADecodeImpl, FlashMLAImpl):  # only forward_mqa is exercised: set what it reads
        impl = object.__new__(cls)
        impl.kv_lora_rank, impl.scale, impl.kv_cache_dtype = 512, 576 ** -0.5, "auto"
        impls[cls] = impl
    tsm, splits = DecodeSchedule(h_q, 16, torch.device("cuda")).build(inp.cache_seqlens, s_q)
    ours_meta = SimpleNamespace(num_decodes=len(seqlens), decode=MLADecodeMetadata(
        block_table=inp.block_table, seq_lens=inp.cache_seqlens, dcp_tot_seq_lens=None,
        tile_scheduler_metadata=tsm, num_splits=splits))
    peer_meta = SimpleNamespace(num_decodes=len(seqlens), decode=FlashMLADecodeMetadata(
        block_table=inp.block_table, seq_lens=inp.cache_seqlens, dcp_tot_seq_lens=None,
        scheduler_metadata=FlashMLASchedMeta()))
    out, lse = impls[MLADecodeImpl].forward_mqa((q[..., :512], q[..., 512:]), kv_cache, ours_meta, None)
    ref_out, ref_lse = impls[FlashMLAImpl].forward_mqa(q, kv_cache, peer_meta, None)
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape
    assert cal_diff(out, ref_out)[0] < 1e-5
    assert cal_diff(lse, ref_lse)[0] < 1e-6


def test_vllm_serve_answers_openai_requests(tiny_model, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", tiny_model, "--load-format", "dummy",
           "--attention-backend", "CUSTOM", "--port", str(port), "--max-model-len", "2048",
           "--gpu-memory-utilization", "0.5"]
    with served(cmd, log) as server:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(server, base, log)
        check_openai_answers(base, tiny_model)
    assert "Using AttentionBackendEnum.CUSTOM backend" in log.read_text()


def test_logprobs_agree_with_flashmla(tiny_model, tmp_path):
    results = {}
    for backend in ("CUSTOM", "FLASHMLA"):
        out = tmp_path / f"{backend}.json"
        subprocess.run([sys.executable, str(ROOT / "tests/vllm_generate.py"), tiny_model, backend, str(out)],
                       check=True, env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        results[backend] = json.loads(out.read_text())
    compared = 0
    for ours, peer in zip(results["CUSTOM"], results["FLASHMLA"]):
        for t_ours, t_peer, lp_ours, lp_peer in zip(ours["tokens"], peer["tokens"], ours["logprobs"],
                                                    peer["logprobs"]):
            if t_ours != t_peer:
                break  # greedy paths may part at a near-tie; compare up to there
            assert abs(lp_ours - lp_peer) < 0.05 + 0.02 * abs(lp_peer), (lp_ours, lp_peer)
            compared += 1
    assert compared >= 40, f"only {compared} decode steps in common"
