"""Issue 10's task screen: how far a plain SFT loop gets on a synthetic-task difficulty, and why
the rest fails (first wrong step classified by ``sx_dagster.core.synthetic.first_error_kind``).

    python benchmarks/screens/task_probe.py --cfg '{"max_start": 10, "max_operand": 5, "max_factor": 2, "max_value": 30}' \
        --seed 0 --steps 800 --batch 16 --lr 2e-3 [--pretrain-steps 300]

h128/2-layer tiny model (``--hidden``, ``--layers``: 4 heads, FFN 4x the width), 4,800 train
problems of the given SyntheticConfig (the experiment's train split for task seed 0) and 400
**dev** problems (the experiment's dev stream, never its test set: a screen chooses), AdamW with cosine schedule and 5% warmup,
gradients clipped at 1.0, loss on the completion.
``--pretrain-steps`` first trains on bare rationales of fresh problems (batch 64, loss on all
tokens): an arithmetic "pretraining" of the base model. Appends a row to
benchmarks/results/task_probe_runs.csv.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "task_probe_runs.csv"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="{}", help="SyntheticConfig fields as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pretrain-steps", type=int, default=0)
    p.add_argument("--hidden", type=int, default=128, help="model width (the default's 128)")
    p.add_argument("--layers", type=int, default=2, help="model depth (the default's 2)")
    p.add_argument("--pass-n", type=int, default=0, help="also sample N per dev question at T=1.0 and report pass@N (0 = skip)")
    p.add_argument("--n-train", type=int, default=4800, help="train problems (fresh problems cost nothing: raise it with --steps)")
    p.add_argument("--n-dev", type=int, default=400, help="dev problems graded (the task's dev stream; the test set is never read)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--device", default="cpu", help="cpu or cuda (fp32 on both; accuracies carry over, times do not)")
    p.add_argument("--results", type=Path, default=RESULTS, help="CSV the row is appended to")
    args = p.parse_args()

    import torch
    from transformers import get_scheduler

    from sx_dagster.config import TinyModelConfig
    from sx_dagster.core.answers import grade
    from sx_dagster.core.prompts import question_prompt
    from sx_dagster.core.synthetic import (
        SyntheticConfig,
        SyntheticProblem,
        first_error_kind,
        generate_problems,
        transfer_sign,
        true_first_error,
    )
    from sx_dagster.core.tasks import synthetic_split
    from sx_dagster.ml.generation import HFBackend, SamplingParams
    from sx_dagster.ml.tiny import build_tiny_model, save_tiny, train_tokenizer

    cfg = SyntheticConfig(**{"min_steps": 2, "max_steps": 3, **json.loads(args.cfg)})
    train = generate_problems(args.n_train, 0, cfg, "train")
    dev = [SyntheticProblem.from_json(e.meta) for e in synthetic_split(args.n_dev, 0, "dev", cfg)]  # never the test set
    tok = train_tokenizer([x.question + "\n" + x.rationale for x in train[:1500]], 512)
    torch.manual_seed(args.seed)
    model = build_tiny_model(
        TinyModelConfig(
            hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, intermediate_size=4 * args.hidden, vocab_size=512
        ),
        tok,
        args.seed,
    ).to(args.device)

    def fit(batches, steps: int, bs: int, lr: float, mask_prompt: bool) -> tuple[float, float]:
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        sched = get_scheduler("cosine", opt, num_warmup_steps=int(0.05 * steps), num_training_steps=steps)
        t0, loss = time.perf_counter(), torch.tensor(0.0)
        for s in range(steps):
            prompts, comps = batches(s, bs)
            ep = tok(prompts, add_special_tokens=False)["input_ids"]
            ec = tok(comps, add_special_tokens=False)["input_ids"]
            seqs = [a + b for a, b in zip(ep, ec, strict=True)]
            w = max(map(len, seqs))
            ids, lab = torch.full((bs, w), tok.pad_token_id), torch.full((bs, w), -100)
            mask = torch.zeros((bs, w), dtype=torch.long)
            for r, (a, q) in enumerate(zip(ep, seqs, strict=True)):
                start = len(a) if mask_prompt else 0
                ids[r, : len(q)], mask[r, : len(q)] = torch.tensor(q), 1
                lab[r, start : len(q)] = torch.tensor(q[start:])
            loss = model(input_ids=ids.to(args.device), attention_mask=mask.to(args.device), labels=lab.to(args.device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        return time.perf_counter() - t0, loss.item()

    model.train()
    if args.pretrain_steps:
        pool = generate_problems(args.pretrain_steps * 64, 7, cfg, "pre")
        t, loss = fit(
            lambda s, b: ([""] * b, [x.rationale + tok.eos_token for x in pool[s * b : (s + 1) * b]]), args.pretrain_steps, 64, 3e-3, False
        )
        print(f"pretraining: {args.pretrain_steps} steps, {t:.0f} s, loss {loss:.3f}", flush=True)
    rng, order = random.Random(100 + args.seed), []

    def sft_batch(s: int, bs: int) -> tuple[list[str], list[str]]:
        nonlocal order
        if len(order) < bs:
            order += rng.sample(range(len(train)), len(train))
        idx, order = order[:bs], order[bs:]
        return [question_prompt(train[i].question) for i in idx], [train[i].rationale + tok.eos_token for i in idx]

    t, loss = fit(sft_batch, args.steps, args.batch, args.lr, True)
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        save_tiny(model, tok, d)
        backend = HFBackend(d, args.device, "float32", 256, prefix_cache=False)
        gens = backend.generate([question_prompt(x.question) for x in dev], SamplingParams(1, 0.0, 1.0, 64, 0, "synthetic"))
        pass_n = None
        if args.pass_n:
            # DPO on self-generated pairs needs pass@N well above greedy: the leading indicator.
            samples = backend.generate(
                [question_prompt(x.question) for x in dev], SamplingParams(args.pass_n, 1.0, 1.0, 64, 1, "synthetic")
            )
            pass_n = round(
                100 * sum(any(grade(g.text, x.answer, "synthetic")[1] for g in gs) for x, gs in zip(dev, samples, strict=True)) / len(dev),
                1,
            )
    kinds: collections.Counter[str] = collections.Counter()
    for x, g in zip(dev, gens, strict=True):
        kind = first_error_kind(x, g[0].text) or "right_steps"  # right_steps: no wrong step, the answer line included
        kinds[kind] += 1
    acc = round(100 * kinds["right_steps"] / len(dev), 1)
    # The transfer's sign at its first transfer step, when reached: is the reasoning rule learned?
    signs = [s for s in (transfer_sign(x, g[0].text) for x, g in zip(dev, gens, strict=True)) if s is not None]
    sign_pct = round(100 * sum(ok for _, ok in signs) / len(signs), 1) if signs else None
    # Choice family: step 1 right, apart for stories that name the picked person first (the cue
    # holds) and those that do not (only the comparison gets them right).
    choice: dict[str, list[bool]] = {"cue": [], "against": []}
    for x, g in zip(dev, gens, strict=True):
        if x.rival is not None:
            fe = true_first_error(x, g[0].text)
            choice["against" if x.rival_first else "cue"].append(fe is None or fe > 1)
    choice_pct = {k: round(100 * sum(v) / len(v), 1) for k, v in choice.items() if v}
    print(
        f"seed {args.seed}: SFT {args.steps} x {args.batch} at lr {args.lr}: {t:.0f} s, loss {loss:.3f}, greedy ~{acc}%; "
        f"first errors {dict(kinds)}; transfer sign right {sign_pct}% of {len(signs)}"
        + (f"; pass@{args.pass_n} {pass_n}%" if pass_n is not None else "")
        + (f"; choice step right (cue holds / against it) {choice_pct}" if choice_pct else "")
    )
    note = "; ".join(
        ([f"model h{args.hidden} x {args.layers} layers"] if (args.hidden, args.layers) != (128, 2) else [])
        + ([f"{args.heads} heads"] if args.heads != 4 else [])
        + ([f"{args.n_train} train problems"] if args.n_train != 4800 else [])
        + [f"{args.n_dev} dev problems"]
        + ([f"trained on {args.device}"] if args.device != "cpu" else [])
        + ([f"pass@{args.pass_n} {pass_n}"] if pass_n is not None else [])
        + ([f"transfer sign {sign_pct}% of {len(signs)}"] if signs else [])
        + ([f"choice step right {choice_pct}"] if choice_pct else [])
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    new = not args.results.exists()
    with args.results.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(
                [
                    "date",
                    "cfg",
                    "seed",
                    "pretrain_steps",
                    "steps",
                    "batch",
                    "lr",
                    "train_s",
                    "loss",
                    "right_steps_pct",
                    "first_errors",
                    "note",
                ]
            )
        w.writerow(
            [
                dt.datetime.now().isoformat(timespec="minutes"),
                args.cfg,
                args.seed,
                args.pretrain_steps,
                args.steps,
                args.batch,
                args.lr,
                round(t),
                round(loss, 4),
                acc,
                json.dumps(dict(kinds)),
                note,
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
