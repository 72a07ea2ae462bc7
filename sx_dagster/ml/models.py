"""Loading models and tokenizers from a checkpoint directory or a Hugging Face id."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message names it and says why."""


def load_tokenizer(name_or_path: str | Path, padding_side: str = "left") -> PreTrainedTokenizerBase:
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as e:  # noqa: BLE001 - re-raised with the name and the reason
        raise ModelLoadError(f"cannot load tokenizer {str(name_or_path)!r}: {type(e).__name__}: {e}") from e
    if tok.pad_token is None:
        # Llama/Mistral ship no pad token; EOS as pad is the common choice and TRL handles it.
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(name_or_path: str | Path, device: str, dtype: str, four_bit: bool = False) -> PreTrainedModel:
    """Weights in ``dtype`` on GPU; on CPU fp32 weights (bf16 runs as autocast, see ml.precision).

    ``four_bit``: NF4 weights through bitsandbytes (QLoRA's frozen base), CUDA only.
    """
    torch_dtype = DTYPES[dtype] if device != "cpu" else torch.float32
    kwargs: dict = {"dtype": torch_dtype}
    if four_bit:
        if device == "cpu":
            raise ModelLoadError(f"cannot load {str(name_or_path)!r} in 4-bit on CPU: QLoRA (lora.qlora) needs a CUDA device")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype)
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"cannot load model {str(name_or_path)!r}: {type(e).__name__}: {e}") from e
    # A saved config may say use_cache: false; generation without the KV cache is ~20x slower.
    model.config.use_cache = True
    if model.generation_config is not None:
        model.generation_config.use_cache = True
    return (model if four_bit else model.to(device)).eval()


def token_counts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    """Tokens per text as a trainer would count them (special tokens included)."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def model_shape(exp):
    """The shape of an experiment's base model, for the estimate: the tiny model from its
    config, a Hub or local model from its config.json (local files / the HF cache only),
    else the known shapes of the paper's models."""
    from sx_dagster.core.estimate import KNOWN_SHAPES, ModelShape

    m = exp.model
    if m.name == "tiny":
        t = m.tiny
        return ModelShape(t.vocab_size, t.hidden_size, t.num_layers, t.intermediate_size, t.num_heads, t.num_heads, True)
    try:
        from transformers import AutoConfig

        c = AutoConfig.from_pretrained(m.name, local_files_only=True)
        heads = c.num_attention_heads
        return ModelShape(
            c.vocab_size, c.hidden_size, c.num_hidden_layers, c.intermediate_size, heads,
            getattr(c, "num_key_value_heads", None) or heads, bool(getattr(c, "tie_word_embeddings", False)),
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - not available offline: fall back to the known shapes
        if m.name in KNOWN_SHAPES:
            return ModelShape(*KNOWN_SHAPES[m.name])
        raise ModelLoadError(f"no config for {m.name!r} offline and no known shape: cannot estimate its size") from None
