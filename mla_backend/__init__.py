"""MLA (DeepSeek-V2/V3) decode attention for Hopper, FlashMLA-compatible."""
from .ops import EXTENSION_ERROR, flash_mla_with_kvcache, get_mla_metadata, has_sm90_kernel

__all__ = ["get_mla_metadata", "flash_mla_with_kvcache", "has_sm90_kernel", "EXTENSION_ERROR"]
