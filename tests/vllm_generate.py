"""Greedy generation with logprobs through vLLM on one attention backend (a subprocess of the tests).

    python tests/vllm_generate.py MODEL_DIR BACKEND OUT_JSON

The dummy weights (uniform +-1e-3) make every logit nearly equal, which would hide attention
errors. So matrices are scaled to a usual init range and norm weights set to 1, the same way
in every run, before generating.
"""
import json
import os
import sys

os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

PROMPTS = ["def fibonacci(n):", "import os\nimport sys\n\nclass", "The quick brown fox", "for i in range(10):"]


def realistic_weights(model):
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.mul_(30.0)
            elif "norm" in name:
                p.fill_(1.0)
    return True


def main():
    from vllm import LLM, SamplingParams

    model, backend, out_path = sys.argv[1:4]
    llm = LLM(model=model, load_format="dummy", attention_backend=backend, max_model_len=2048,
              gpu_memory_utilization=0.5, seed=0)
    llm.apply_model(realistic_weights)
    params = SamplingParams(temperature=0.0, max_tokens=48, logprobs=1)
    results = []
    for out in llm.generate(PROMPTS, params):
        c = out.outputs[0]
        results.append({"tokens": list(c.token_ids),
                        "logprobs": [lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)]})
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
