"""Loading models and tokenizers from a checkpoint directory or a Hugging Face id.

Code shipped with a model (an ``auto_map`` in its config.json or tokenizer_config.json, a
``custom_generate/generate.py``) runs only when the experiment says ``model.trust_remote_code:
true``. Every load here passes that flag to transformers explicitly and, when it is false,
refuses such a model before transformers sees it; transformers' interactive "[y/N]" prompt is
switched off so that no load can ever wait on, or be answered from, standard input.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import transformers.dynamic_module_utils as _dynamic_modules
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

# transformers' v6 renames (gradient_checkpointing -> activation_checkpointing, ...) warn once per
# trainer and model: noise in every run log, nothing a user of this pipeline can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# transformers prompts on stdin (15 s alarm) when a load does not say trust_remote_code; 0 makes
# such a load raise instead. Every load here says it; this covers any library-internal load.
_dynamic_modules.TIME_OUT_REMOTE_CODE = 0

TRUST_FIELD = "model.trust_remote_code"
CODE_CONFIGS = ("config.json", "tokenizer_config.json")  # an "auto_map" in either names Python to import
CUSTOM_GENERATE = "custom_generate/generate.py"  # replaces generate() when trusted


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message names it and says why."""


class RemoteCodeRefused(ModelLoadError):
    """A model that asks to run its own code while the experiment does not allow it."""


def _config_file(name_or_path: str, filename: str, local_files_only: bool) -> Path | None:
    """``filename`` of a local model directory, or of a Hub model (cache or download; no code runs)."""
    local = Path(name_or_path)
    if local.is_dir():
        return local / filename if (local / filename).is_file() else None
    try:
        from transformers.utils import cached_file

        found = cached_file(
            name_or_path,
            filename,
            local_files_only=local_files_only,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except Exception:  # noqa: BLE001 - unknown id, offline: the load itself reports it (trust_remote_code is explicit there)
        return None
    return Path(found) if found else None


def remote_code_requests(name_or_path: str | Path, local_files_only: bool = False) -> list[str]:
    """What in a model asks for its own Python code to run, as readable lines ("config.json:
    auto_map -> ..."); empty for a model that transformers' built-in classes load."""
    name = str(name_or_path)
    found = []
    for filename in CODE_CONFIGS:
        path = _config_file(name, filename, local_files_only)
        if path is None:
            continue
        try:
            auto_map = json.loads(path.read_text()).get("auto_map")
        except (OSError, ValueError, AttributeError):
            continue  # unreadable or not a JSON object: the load itself reports it
        if auto_map:
            found.append(f"{filename}: auto_map -> {json.dumps(auto_map)}")
    if Path(name).is_dir() and (Path(name) / CUSTOM_GENERATE).is_file():
        found.append(f"{CUSTOM_GENERATE} (replaces generate)")
    return found


def check_remote_code(name_or_path: str | Path, trust_remote_code: bool, local_files_only: bool = False) -> list[str]:
    """Raise :class:`RemoteCodeRefused` if the model ships code and ``trust_remote_code`` is false.
    Returns what asks for code (empty when nothing does), for the caller's log when allowed.

    Stricter than transformers on purpose: a model whose architecture transformers knows but
    whose config still maps to its own code is refused too, rather than silently loaded with
    classes its author did not ship it with."""
    requests = remote_code_requests(name_or_path, local_files_only)
    if requests and not trust_remote_code:
        raise RemoteCodeRefused(
            f"model {str(name_or_path)!r} ships Python code that loading it would run ({'; '.join(requests)}), "
            f"and the experiment does not allow that: {TRUST_FIELD} is false. Read that code; set "
            f"{TRUST_FIELD}: true in the experiment only if you trust it (it runs with this pipeline's permissions)."
        )
    return requests


def load_tokenizer(name_or_path: str | Path, padding_side: str = "left", trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    check_remote_code(name_or_path, trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - re-raised with the name and the reason
        raise ModelLoadError(f"cannot load tokenizer {str(name_or_path)!r}: {type(e).__name__}: {e}") from e
    if tok.pad_token is None:
        # Llama/Mistral ship no pad token; EOS as pad is the common choice and TRL handles it.
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(
    name_or_path: str | Path, device: str, dtype: str, four_bit: bool = False, trust_remote_code: bool = False
) -> PreTrainedModel:
    """Weights in ``dtype`` on GPU; on CPU fp32 weights (bf16 runs as autocast, see ml.precision).

    ``four_bit``: NF4 weights through bitsandbytes (QLoRA's frozen base), CUDA only.
    ``trust_remote_code``: the experiment's ``model.trust_remote_code`` (see :func:`check_remote_code`).
    """
    check_remote_code(name_or_path, trust_remote_code)
    torch_dtype = DTYPES[dtype] if device != "cpu" else torch.float32
    # use_kernels=False: transformers >= 5.25 swaps layers for kernels fetched from the Hub by default
    # (a download at run time, and other numerics); every stage computes with the model's own layers.
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, "use_kernels": False}
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
        return m.tiny.shape()
    check_remote_code(m.name, m.trust_remote_code, local_files_only=True)  # refused: say so, not "no config"
    try:
        from transformers import AutoConfig

        c = AutoConfig.from_pretrained(m.name, local_files_only=True, trust_remote_code=m.trust_remote_code)
        heads = c.num_attention_heads
        return ModelShape(
            c.vocab_size, c.hidden_size, c.num_hidden_layers, c.intermediate_size, heads,
            getattr(c, "num_key_value_heads", None) or heads, bool(getattr(c, "tie_word_embeddings", False)),
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - not available offline: fall back to the known shapes
        if m.name in KNOWN_SHAPES:
            return ModelShape(*KNOWN_SHAPES[m.name])
        raise ModelLoadError(f"no config for {m.name!r} offline and no known shape: cannot estimate its size") from None
