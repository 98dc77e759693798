"""The SGLang plugin on CPU: registration through the entry point, and the backend's own half
(page table, schedule, decode and target-verify calls) against the reference. SGLang's
FlashInfer-MLA parent is not constructed here: it needs a GPU."""
import importlib.metadata
from types import SimpleNamespace

import pytest
import torch

from mla_backend import reference
from mla_backend.testing import make_decode_inputs, req_to_token_pool

pytest.importorskip("sglang.srt.layers.attention.attention_registry",
                    reason="needs SGLang 0.5.17 (its own environment: .ci/run makes one)")


def test_entry_point_registers_backend():
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
    from sglang.srt.models.deepseek_common.attention_backend_handler import (
        AttentionBackendRegistry,
        handle_attention_flashmla,
    )
    from sglang.srt.server_args import ATTENTION_BACKEND_CHOICES

    from mla_backend.sglang import create_backend

    eps = [ep for ep in importlib.metadata.entry_points(group="sglang.srt.plugins") if ep.name == "mla_backend"]
    assert len(eps) == 1 and eps[0].value == "mla_backend.sglang:register"
    eps[0].load()()
    assert ATTENTION_BACKENDS["mla_backend"] is create_backend
    assert "mla_backend" in ATTENTION_BACKEND_CHOICES
    assert AttentionBackendRegistry.get_handler("mla_backend") is handle_attention_flashmla


def test_page_size_other_than_64_is_refused():
    from mla_backend.sglang import create_backend

    with pytest.raises(ValueError, match="needs --page-size 64, got 16"):
        create_backend(SimpleNamespace(page_size=16))


class KVPool:
    def __init__(self, k_cache):
        self.key_buffer = k_cache.view(-1, 1, k_cache.shape[-1])

    def get_key_buffer(self, layer_id):
        return self.key_buffer


def backend_for(inp, seq_lens, h_q, num_draft_tokens, graph_max_bs):
    from mla_backend.sglang.backend import MLADecodeAttnBackend

    backend = object.__new__(MLADecodeAttnBackend)  # our half only: FlashInfer-MLA's __init__ needs a GPU
    req_to_token, rows = req_to_token_pool(inp.block_table, seq_lens, pool_rows=2 * len(seq_lens) + 1,
                                           max_context=4096)
    backend.__dict__.update(num_q_heads=h_q, kv_lora_rank=512, req_to_token=req_to_token,
                            num_draft_tokens=num_draft_tokens, max_context_len=4096, max_pages=4096 // 64 + 1,
                            is_draft_runner=False, skip_prefill=False, device=torch.device("cpu"),
                            graph_page_table=None, graph_schedule=None, decode_metadata=None, _verify_mask=None,
                            token_to_kv_pool=KVPool(inp.k_cache))
    if graph_max_bs:
        backend.init_cuda_graph_state(graph_max_bs, graph_max_bs * max(num_draft_tokens, 1))
    return backend, rows


@pytest.mark.parametrize("num_draft_tokens", [0, 3])  # decode, and target verify of 3 draft tokens
@pytest.mark.parametrize("graph_max_bs", [None, 8, 2])  # eager; graph buffers; batch beyond them
def test_decode_and_verify_match_reference(num_draft_tokens, graph_max_bs):
    h_q, kv_lens = 16, [70, 300, 5]
    s_q = max(num_draft_tokens, 1)
    inp = make_decode_inputs(kv_lens, s_q, h_q, seed=num_draft_tokens)
    backend, rows = backend_for(inp, kv_lens, h_q, num_draft_tokens, graph_max_bs)
    verify = num_draft_tokens > 0
    mode = SimpleNamespace(is_target_verify=lambda: verify, is_decode_or_idle=lambda: not verify)
    forward_batch = SimpleNamespace(batch_size=len(kv_lens), forward_mode=mode, req_pool_indices=rows,
                                    seq_lens=torch.tensor(kv_lens) - num_draft_tokens, out_cache_loc=None)
    graph_table = None if backend.graph_page_table is None else backend.graph_page_table.clone()
    backend.init_forward_metadata_out_graph(forward_batch)
    layer = SimpleNamespace(layer_id=0, tp_q_head_num=h_q, head_dim=576, v_head_dim=512, scaling=576 ** -0.5)
    q_tokens = inp.q.view(-1, h_q * 576)
    run = backend.forward_extend if verify else backend.forward_decode
    out = run(q_tokens, None, None, layer, forward_batch)
    ref_out, _ = reference.mla_decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, 576 ** -0.5, True)
    assert torch.equal(out, ref_out.view(-1, h_q * 512))
    if graph_max_bs == 8:  # the schedule and page table live in the graph buffers
        assert backend.decode_metadata.page_table.data_ptr() == backend.graph_page_table.data_ptr()
    if graph_max_bs == 2:  # an eager batch beyond the graph buffers leaves them untouched
        assert torch.equal(backend.graph_page_table, graph_table)
