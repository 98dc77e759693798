"""vLLM plugin: `--attention-backend CUSTOM` runs MLA decode on mla_backend's kernel.

`register` is the `vllm.general_plugins` entry point, so vLLM calls it in every
process (API server, engine core, workers) before it picks attention backends.
"""

BACKEND_CLASS_PATH = "mla_backend.vllm.backend.MLADecodeBackend"


def register() -> None:
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    register_backend(AttentionBackendEnum.CUSTOM, BACKEND_CLASS_PATH)
    if current_platform.is_cpu():
        from .cpu import enable_mla_on_cpu

        enable_mla_on_cpu()
