"""SGLang adapter (in progress): the mapping from SGLang's token pool to the kernel's pages.

The attention backend and its `sglang.srt.plugins` registration come with their GPU
tests; see issue #5's notes for what is missing.
"""
