import pytest
import torch

import mla_backend


def sm90_device() -> torch.device | None:
    if torch.cuda.is_available() and mla_backend.has_sm90_kernel(torch.device("cuda")):
        return torch.device("cuda")
    return None


def sm90_skip_reason() -> str:
    if not torch.cuda.is_available():
        return "needs an sm_90 GPU: no CUDA device"
    if mla_backend.EXTENSION_ERROR:
        return f"needs the built extension: {mla_backend.EXTENSION_ERROR}"
    return f"needs an sm_90 GPU, found compute capability {torch.cuda.get_device_capability()}"


requires_sm90 = pytest.mark.skipif(sm90_device() is None, reason=sm90_skip_reason() if sm90_device() is None else "")
