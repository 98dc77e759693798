#!/usr/bin/env bash
# Serves a DeepSeek-V3 model folder with the CUSTOM (mla_backend) attention backend.
#   examples/serve.sh MODEL_DIR [extra vllm serve args...]
# For the tiny model of make_tiny_deepseek_v3.py add --load-format dummy. Without a CUDA
# GPU it serves through vLLM's CPU build and the float32 reference decode.
set -euo pipefail
model=${1:?usage: examples/serve.sh MODEL_DIR [vllm serve args...]}
shift
args=(serve "$model" --attention-backend CUSTOM --block-size 64)
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
  args+=(--enforce-eager --max-model-len "${MAX_MODEL_LEN:-2048}")
fi
exec python3 -m vllm.entrypoints.cli.main "${args[@]}" "$@"
