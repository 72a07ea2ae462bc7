"""The generation backend contract, one conformance suite for every backend.

The HF half runs everywhere (a random tiny Llama on CPU, fp32); the vLLM half runs where
vllm and a CUDA GPU are present and is skipped otherwise.
"""

import importlib.util

import pytest
import torch

from sx_dagster.config import TinyModelConfig
from sx_dagster.core.prompts import STOP_STRINGS, clean_completion, prefix_prompt, question_prompt
from sx_dagster.core.tasks import synthetic_examples
from sx_dagster.ml.generation import HFBackend, SamplingParams
from sx_dagster.ml.tiny import build_tiny_model, save_tiny, train_tokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    examples = synthetic_examples(200, seed=5, split="train")
    tok = train_tokenizer([question_prompt(e.question) + e.rationale for e in examples], vocab_size=300)
    cfg = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=300)
    path = tmp_path_factory.mktemp("tiny-gen")
    save_tiny(build_tiny_model(cfg, tok, seed=0), tok, path)
    return path, examples


BACKENDS = ["hf", "hf-no-prefix-cache", pytest.param("vllm", marks=pytest.mark.skipif(not HAS_VLLM, reason="needs vllm and a GPU"))]


def make(kind: str, path, batch_size: int = 64):
    if kind == "vllm":
        from sx_dagster.ml.vllm_backend import VLLMBackend

        return VLLMBackend(path, dtype="float32", gpu_memory_utilization=0.3)
    return HFBackend(path, "cpu", "float32", batch_size, prefix_cache=kind == "hf")


def prompts_of(examples, n: int = 5) -> list[str]:
    return [prefix_prompt(e.question, e.rationale.split("\n"), 1, "synthetic") for e in examples[:n]]


def drawn(out) -> list[list[tuple[str, int]]]:
    """What was sampled (text, length), leaving out what it cost to prefill."""
    return [[(g.text, g.n_tokens) for g in gens] for gens in out]


SAMPLED = SamplingParams(n=3, temperature=0.9, top_p=0.95, max_new_tokens=20, seed=11, task="synthetic")


@pytest.mark.parametrize("kind", BACKENDS)
def test_shape_lengths_and_cut(kind, model_dir):
    path, examples = model_dir
    backend = make(kind, path)
    prompts = prompts_of(examples)
    out = backend.generate(prompts, SAMPLED)
    assert [len(g) for g in out] == [3] * len(prompts)
    for gens in out:
        for g in gens:
            assert 1 <= g.n_tokens <= SAMPLED.max_new_tokens
            assert g.prompt_tokens > 0
            assert clean_completion(g.text, "synthetic") == g.text  # already cut
            assert not any(stop in g.text for stop in STOP_STRINGS["synthetic"])
    assert backend.stats.generated_tokens == sum(g.n_tokens for gens in out for g in gens)
    assert backend.generate([], SAMPLED) == []


@pytest.mark.parametrize("kind", BACKENDS)
def test_seeded_and_independent_of_batching(kind, model_dir):
    path, examples = model_dir
    prompts = prompts_of(examples)
    a = drawn(make(kind, path).generate(prompts, SAMPLED))
    assert drawn(make(kind, path).generate(prompts, SAMPLED)) == a  # same seed, same samples
    other = drawn(make(kind, path).generate(prompts, SamplingParams(**{**SAMPLED.__dict__, "seed": 12})))
    assert other != a
    # Sample j of a prompt is the same draw alone, in a batch of 1, or asked for as sample j of one.
    one_at_a_time = make(kind, path, batch_size=1)
    single = SamplingParams(**{**SAMPLED.__dict__, "n": 1})
    for i, prompt in enumerate(reversed(prompts)):
        for j in range(SAMPLED.n):
            assert drawn(one_at_a_time.generate([prompt], single, first_sample=[j]))[0][0] == a[len(prompts) - 1 - i][j]


@pytest.mark.parametrize("kind", BACKENDS)
def test_greedy_copies_agree(kind, model_dir):
    path, examples = model_dir
    out = make(kind, path).generate(prompts_of(examples, 3), SamplingParams(n=2, temperature=0.0, max_new_tokens=16, task="synthetic"))
    assert all(g[0].text == g[1].text for g in out)


def test_hf_prefix_cache_changes_cost_not_samples(model_dir):
    path, examples = model_dir
    cached, plain = make("hf", path), make("hf-no-prefix-cache", path)
    # Exploration's access pattern: step 1 of each rationale, then step 2 of the same ones.
    for step in (1, 2):
        prompts = [prefix_prompt(e.question, e.rationale.split("\n"), step, "synthetic") for e in examples[:8]]
        assert drawn(cached.generate(prompts, SAMPLED)) == drawn(plain.generate(prompts, SAMPLED))
    assert cached.stats.prompt_tokens == plain.stats.prompt_tokens == plain.stats.prefill_tokens
    # Prefilled once per prompt instead of n times, and step 2 reuses step 1's KV.
    assert cached.stats.prefill_tokens < plain.stats.prefill_tokens / SAMPLED.n
    assert cached.stats.generated_tokens == plain.stats.generated_tokens


def test_vllm_without_the_extra_is_a_clear_error(model_dir, monkeypatch):
    if HAS_VLLM:
        pytest.skip("vllm is installed here")
    from sx_dagster.ml.vllm_backend import BackendUnavailable, VLLMBackend

    with pytest.raises(BackendUnavailable, match=r"sx-dagster\[gpu\]"):
        VLLMBackend(model_dir[0])


def test_prefix_cache_contract_with_transformers_dynamic_cache(model_dir):
    """The prefix cache (ml/generation.py) slices and re-assembles DynamicCache per layer through
    ``cache.layers[i].keys / .values`` of shape (batch, kv heads, seq, head dim). It paid 1.98x on
    GSM8K-length prompts (benchmarks/prefix_cache.py), so it stays; this pins the layout it needs.
    If this fails, transformers changed the cache: update _PrefixCache or set prefix_cache: false."""
    import torch
    from transformers import DynamicCache

    from sx_dagster.ml.models import load_model, load_tokenizer

    path, examples = model_dir
    model, tok = load_model(path, "cpu", "float32"), load_tokenizer(path)
    ids = tok([question_prompt(examples[0].question)], return_tensors="pt")["input_ids"]
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    layers = getattr(cache, "layers", None)
    assert layers is not None and len(layers) == model.config.num_hidden_layers, "DynamicCache.layers changed"
    c = model.config
    for layer in layers:
        for t in (layer.keys, layer.values):
            assert t.shape == (1, c.num_key_value_heads, ids.shape[1], c.hidden_size // c.num_attention_heads)
