"""`examples/serve.sh` on vLLM's CPU build: the CUSTOM backend serves through the reference path."""
import subprocess
import sys
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


def test_cpu_serve_answers_openai_requests(tmp_path):
    model = tmp_path / "tiny"
    subprocess.run([sys.executable, str(ROOT / "examples/make_tiny_deepseek_v3.py"), str(model), "--heads", "16",
                    "--layers", "2"], check=True)
    port, log = free_port(), tmp_path / "serve.log"
    with served(["bash", str(ROOT / "examples/serve.sh"), str(model), "--load-format", "dummy", "--port", str(port)],
                log) as server:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(server, base, log, timeout_s=400)
        check_openai_answers(base, str(model))
    assert "MLA on CPU: mla_backend.vllm.backend.MLADecodeBackend decode" in log.read_text()
