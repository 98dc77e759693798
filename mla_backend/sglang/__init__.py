"""SGLang plugin: `--attention-backend mla_backend --page-size 64` decodes on mla_backend's kernel.

`register` is the `sglang.srt.plugins` entry point; SGLang runs it in every process
before it parses arguments or builds attention backends.
"""

BACKEND_NAME = "mla_backend"


def register() -> None:
    from sglang.srt.layers.attention.attention_registry import register_attention_backend
    from sglang.srt.models.deepseek_common.attention_backend_handler import (
        AttentionBackendRegistry,
        handle_attention_flashmla,
    )
    from sglang.srt.server_args import ATTENTION_BACKEND_CHOICES, add_attention_backend_choices

    register_attention_backend(BACKEND_NAME)(create_backend)
    if BACKEND_NAME not in ATTENTION_BACKEND_CHOICES:
        add_attention_backend_choices([BACKEND_NAME])
    # DeepSeek models take the absorbed-MLA decode path and FlashInfer-MLA's prefill for
    # this name, as they do for flashmla.
    AttentionBackendRegistry.register(BACKEND_NAME, handle_attention_flashmla)


def create_backend(model_runner):
    from .backend import MLADecodeAttnBackend

    return MLADecodeAttnBackend(model_runner)
