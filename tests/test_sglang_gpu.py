"""The SGLang backend on an sm_90 GPU: SGLang's own MLA attention kit, and launch_server."""
import subprocess
import sys
import unittest
from pathlib import Path

import pytest

from mla_backend.testing import sm90_skip_reason
from openai_server import check_openai_answers, free_port, served, wait_healthy

ROOT = Path(__file__).resolve().parent.parent

try:
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    from sglang.test.kits.attention_unittest.attention_methods.mla_attention import (
        MLAAttentionCase,
        run_mla_attention_case,
    )
    _reason = sm90_skip_reason()
except ImportError as e:
    _reason = f"needs SGLang 0.5.17: {e}"
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


def kit_cases():
    def case(name, mode, heads, prefix, extend=()):
        return MLAAttentionCase(name=name, backend="mla_backend", forward_mode=mode, num_heads=heads, page_size=64,
                                prefix_lens=prefix, extend_lens=extend)

    return [
        case("decode_page_edges", ForwardMode.DECODE, 16, (62, 63, 64, 127)),
        case("decode_long_128_heads", ForwardMode.DECODE, 128, (1, 900)),
        case("extend_prefill_inherited", ForwardMode.EXTEND, 16, (0, 64), (70, 3)),
    ]


class SGLangAttentionKit(unittest.TestCase):
    def test_mla_backend_cases(self):
        import torch

        from mla_backend.sglang import register

        register()
        for c in kit_cases():
            with self.subTest(c.name):
                run_mla_attention_case(self, c, kv_lora_rank=512, qk_rope_head_dim=64, hidden_size=256,
                                       max_context_len=1024, dtype=torch.bfloat16)


def test_launch_server_answers_openai_requests(tmp_path):
    model = tmp_path / "tiny"
    subprocess.run([sys.executable, str(ROOT / "examples/make_tiny_deepseek_v3.py"), str(model), "--layers", "2"],
                   check=True)
    port, log = free_port(), tmp_path / "server.log"
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model), "--attention-backend",
           "mla_backend", "--page-size", "64", "--load-format", "dummy", "--port", str(port),
           "--mem-fraction-static", "0.5"]
    with served(cmd, log) as server:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(server, base, log, timeout_s=600)
        check_openai_answers(base, str(model))
