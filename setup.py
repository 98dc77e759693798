"""Builds mla_backend._C: the sm_90a MLA decode kernels as an abi3 torch extension."""
import os
from pathlib import Path

import cutlass_library
from setuptools import find_packages, setup

# torch guesses CUDA_HOME from the nvcc on PATH, which may be a wrapper outside the toolkit.
if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

from torch.utils.cpp_extension import BuildExtension, CUDAExtension  # noqa: E402

ROOT = Path(__file__).resolve().parent
CUTLASS_INCLUDE = Path(cutlass_library.__file__).resolve().parent / "source" / "include"

# The kernels use wgmma, TMA and setmaxnreg: Hopper's sm_90a target only.
os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0a"

NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "--expt-relaxed-constexpr",
    "--use_fast_math",
    "-DNDEBUG",
    "-lineinfo",
]
if os.environ.get("MLA_PTXAS_VERBOSE"):
    NVCC_FLAGS.append("-Xptxas=-v")
# Diagnosis build: in-kernel globaltimer stamps (kernels/timeline.h, benchmarks/timeline_decode.py).
TIMELINE_FLAGS = ["-DMLA_TIMELINE"] if os.environ.get("MLA_TIMELINE") else []

ext = CUDAExtension(
    name="mla_backend._C",
    sources=[
        "kernels/api.cpp",
        "kernels/scheduler.cu",
        "kernels/splitkv_mla_bf16.cu",
        "kernels/splitkv_mla_fp16.cu",
        "kernels/combine.cu",
    ],
    include_dirs=[str(ROOT / "kernels"), str(CUTLASS_INCLUDE)],
    extra_compile_args={
        "cxx": ["-O3", "-std=c++17", *TIMELINE_FLAGS],
        "nvcc": NVCC_FLAGS + TIMELINE_FLAGS,
    },
    py_limited_api=True,
)

setup(
    name="mla-backend",
    version="0.1.0",
    description="MLA decode attention for Hopper, with vLLM and SGLang backends",
    packages=find_packages(include=["mla_backend", "mla_backend.*"]),
    python_requires=">=3.10",
    install_requires=["torch==2.11.0"],
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    entry_points={
        "vllm.general_plugins": ["mla_backend = mla_backend.vllm:register"],
        "sglang.srt.plugins": ["mla_backend = mla_backend.sglang:register"],
    },
)
