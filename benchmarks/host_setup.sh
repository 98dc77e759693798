# Sourced on the GPU host at the start of each end-to-end call (benchmarks/GPU_HOST.md):
#   source benchmarks/host_setup.sh STAGE_DIR
# STAGE_DIR is a carried folder holding this call's bundle part(s) and, with the last part,
# unpack.sh and our wheel. The parts gather in /tmp/parts; vLLM's runtime is unpacked once,
# our wheel installed (vLLM finds the backend through its entry point), and the 61-layer,
# 16-head tiny model written once. A warm host keeps all three between calls.
stage="$1"
mkdir -p /tmp/parts
cp "$stage"/part-* /tmp/parts/ 2>/dev/null
if [ -f "$stage/unpack.sh" ]; then
  export PYTHONPATH=/tmp/vllm-site PYTHONUNBUFFERED=1
  if ! python3 -c "import vllm" 2>/dev/null; then
    rm -rf /tmp/vllm-site
    bash "$stage/unpack.sh" /tmp/parts > /tmp/unpack.log 2>&1 || { tail -20 /tmp/unpack.log; return 1; }
  fi
  python3 -m pip install -q --no-deps --no-index --force-reinstall "$stage"/mla_backend-*.whl || return 1
  [ -f /tmp/tiny16x61/config.json ] ||
    python3 examples/make_tiny_deepseek_v3.py /tmp/tiny16x61 --heads 16 --layers 61 > /dev/null || return 1
  python3 -c "import vllm, mla_backend; assert mla_backend.EXTENSION_ERROR is None; print('vllm', vllm.__version__, 'and mla_backend ready')"
fi
