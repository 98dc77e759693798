"""Starts an OpenAI-compatible server (vLLM or SGLang) for a test and asks it a completion and a chat."""
import contextlib
import json
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read())


@contextlib.contextmanager
def served(cmd: list[str], log_path):
    """Runs the server command `cmd` until the block ends; yields its process."""
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield server
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def wait_healthy(server, base: str, log_path, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert server.poll() is None, open(log_path).read()[-4000:]
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            return
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"server not healthy after {timeout_s} s: {open(log_path).read()[-4000:]}")


def check_openai_answers(base: str, model: str) -> None:
    status, body = post(base + "/v1/completions", {"model": model, "prompt": "def f(x):", "max_tokens": 16})
    assert status == 200 and body["choices"][0]["text"]
    status, body = post(base + "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16})
    assert status == 200 and body["choices"][0]["message"]["content"]
