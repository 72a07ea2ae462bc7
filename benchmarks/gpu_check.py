"""The GPU half of the ML layer, checked with the tiny model in one short run (issue 12).

    python benchmarks/gpu_check.py --device cuda     # on a GPU machine: bf16, ~a minute
    python benchmarks/gpu_check.py --device cpu      # what CI runs, so the script cannot rot

Builds the tiny Llama and its tokenizer from synthetic problems, then on ``--device``:
SFT steps and DPO steps through our TRL wrappers (bf16 on CUDA where supported, the
accelerator's ``auto`` choice on CPU), a LoRA SFT (PEFT, merged), and HF generation tokens/s
on the device against the same on CPU. Prints one table; exits non-zero if a check fails.
Needs torch, transformers, peft, accelerate, trl, datasets, pydantic (no Dagster, no vLLM:
the vLLM conformance tests stay skipped where its wheel cannot be brought).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _gen_tokens_per_s(path: Path, device: str, dtype: str, prompts: list[str]) -> float:
    from sx_dagster.ml.generation import HFBackend, SamplingParams

    backend = HFBackend(path, device, dtype, batch_size=256)
    backend.generate(prompts[:8], SamplingParams(1, 0.7, 1.0, 8, 0, "synthetic"))  # warm-up
    backend.stats.generated_tokens, backend.stats.seconds = 0, 0.0
    backend.generate(prompts, SamplingParams(4, 0.7, 1.0, 48, 1, "synthetic"))
    rate = backend.stats.tokens_per_second()
    backend.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per training check")
    p.add_argument("--prompts", type=int, default=64, help="prompts for the tokens/s check (x4 samples)")
    args = p.parse_args(argv)

    import torch

    from sx_dagster.config import DPOSection, LoRASection, TinyModelConfig, TrainSection
    from sx_dagster.core.prompts import question_prompt
    from sx_dagster.core.synthetic import generate_problems
    from sx_dagster.device import describe, resolve_device, resolve_dtype
    from sx_dagster.ml.tiny import build_tiny_model, save_tiny, train_tokenizer
    from sx_dagster.ml.training import Precision, train_dpo, train_sft

    device, dtype = resolve_device(args.device), resolve_dtype(args.device)
    print(f"torch {torch.__version__}, {describe(args.device)}" + (f", {torch.cuda.get_device_name(device)}" if device != "cpu" else ""))
    problems = generate_problems(args.steps * 16, seed=0)
    rows = [{"prompt": question_prompt(x.question), "completion": x.rationale} for x in problems]
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["completion"].split("\n")[0] + " 1"} for r in rows]
    results: list[tuple[str, str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        tok = train_tokenizer([x.question + "\n" + x.rationale for x in problems], 300)
        save_tiny(build_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), tok, 0), tok, base)
        precision = Precision(device, dtype)
        sft = TrainSection(epochs=1, learning_rate=1e-3, batch_size=16, max_length=160, lr_scheduler="constant", warmup_ratio=0)
        checks = [
            ("SFT", lambda out: train_sft(base, rows, out, sft, precision, seed=0)),
            ("DPO", lambda out: train_dpo(base, base, pairs, out, DPOSection(epochs=1, batch_size=16, max_length=192), precision, seed=0)),
            ("LoRA SFT", lambda out: train_sft(base, rows, out, sft, precision, seed=0, lora=LoRASection(r=4, alpha=8))),
        ]
        for name, run in checks:
            out = Path(tmp) / name.replace(" ", "_")
            try:
                t = time.perf_counter()
                r = run(out)
                ok = r.steps > 0 and r.final_loss is not None and (out / "model.safetensors").exists()
                results.append((name, f"{r.steps} steps, loss {r.final_loss:.3f}, {time.perf_counter() - t:.1f} s", ok))
            except Exception as e:  # noqa: BLE001 - reported in the table, the exit code says it failed
                results.append((name, f"{type(e).__name__}: {e}"[:160], False))
        prompts = [question_prompt(x.question) for x in problems[: args.prompts]]
        try:
            here = _gen_tokens_per_s(base, device, dtype, prompts)
            cpu = here if device == "cpu" else _gen_tokens_per_s(base, "cpu", "float32", prompts)
            results.append(("generation", f"{here:,.0f} tokens/s on {device} ({dtype}), {cpu:,.0f} on cpu (float32)", here > 0))
        except Exception as e:  # noqa: BLE001
            results.append(("generation", f"{type(e).__name__}: {e}"[:160], False))
    print("| check | result | ok |\n|---|---|---|")
    for name, what, ok in results:
        print(f"| {name} | {what} | {'yes' if ok else 'NO'} |")
    return 0 if all(ok for _, _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
