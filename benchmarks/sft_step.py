"""Seconds per SFT step of the default's model on this CPU, in fp32 and (where the CPU has
native bf16) bf16 autocast: the numbers behind the accelerator's ``dtype: auto`` choice.

    python benchmarks/sft_step.py [--experiment tiny-synthetic] [--steps 8]

Builds the experiment's tiny model and tokenizer from its synthetic train questions (as
``base_model`` does), and times forward + backward + AdamW over batches of real
prompt+rationale rows at the experiment's SFT batch size. Prints a table.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from sx_dagster.config import get_experiment
    from sx_dagster.core.prompts import question_prompt
    from sx_dagster.core.tasks import synthetic_split
    from sx_dagster.ml.tiny import build_tiny_model, train_tokenizer
    from sx_dagster.resources.accelerator import cpu_has_native_bf16

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny-synthetic")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=0, help="rows per step (0 = the experiment's SFT batch x accumulation)")
    args = p.parse_args()
    exp = get_experiment(args.experiment)
    train = synthetic_split(exp.task.n_train, exp.task.seed, "train", exp.task.synthetic)
    texts = [question_prompt(e.question) + e.rationale for e in train]
    tok = train_tokenizer([e.question + "\n" + e.rationale for e in train], exp.model.tiny.vocab_size)
    model = build_tiny_model(exp.model.tiny, tok, exp.seed)
    bs = args.batch or exp.sft.batch_size * exp.sft.grad_accum
    lengths = [len(ids) + 1 for ids in tok(texts)["input_ids"]]
    n_params = sum(p.numel() for p in model.parameters())
    mean = sum(lengths) / len(lengths)
    print(f"{args.experiment}: {n_params:,} parameters, batch {bs}, tokens per row mean {mean:.1f} max {max(lengths)}")
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"CPU capability {cap}, native bf16 {cpu_has_native_bf16()}, threads {torch.get_num_threads()}")
    modes = ["float32"] + (["bfloat16"] if cpu_has_native_bf16() else [])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    print("| dtype | s/step | tokens/s |\n|---|---:|---:|")
    for mode in modes:
        times, ntok = [], 0
        for s in range(args.steps + 2):
            batch = tok(texts[(s * bs) % len(texts) : (s * bs) % len(texts) + bs], return_tensors="pt", padding=True)
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bfloat16"):
                loss = model(**batch, labels=batch["input_ids"]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if s >= 2:  # warm-up steps excluded
                times.append(time.perf_counter() - t)
                ntok += int(batch["attention_mask"].sum())
        print(f"| {mode} | {sum(times) / len(times):.3f} | {ntok / sum(times):,.0f} |")


if __name__ == "__main__":
    main()
