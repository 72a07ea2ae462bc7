"""The cheap screen for the default's size: SFT accuracy against steps, in one run.

    python benchmarks/sft_curve.py --set model.tiny.hidden_size=128 --set task.n_train=6000 --label h128

Generates the experiment's synthetic task, builds its tokenizer and tiny model (as
``task_dataset`` and ``base_model`` do), trains SFT with a plain loop (AdamW, the section's
lr, warmup and cosine/linear schedule, loss on the completion only, the experiment's batch
and epochs) and every ``--eval-every`` steps measures greedy accuracy on ``--n-test`` test
questions. A curve that is flat over its last fifth is a plateau (issue 10 part 4).
``--pass-n N`` also samples N completions per test question (T=0.7) after the last step and
reports pass@N, the headroom a preference method can sharpen (issue 10 part 5).
Appends one row per (seed, eval point) to ``benchmarks/results/sft_curve_runs.csv`` (or ``--results``).
A plain loop, not TRL (gradients clipped at norm 1.0 as TRL does): ~20% faster than
SFTTrainer for the same update, so the time column is a lower bound for the asset.
``--device cuda`` screens on a GPU in fp32: accuracies carry over, times do not.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "sft_curve_runs.csv"


def accuracy(model, tok, test, device: str = "cpu", n: int = 1) -> tuple[float, float]:
    """(greedy accuracy %, pass@n %) of ``model`` on ``test`` examples through the HF generation
    backend; pass@n samples n completions at T=0.7 (0.0 when n <= 1)."""
    from sx_dagster.core.answers import grade
    from sx_dagster.core.prompts import question_prompt
    from sx_dagster.ml.generation import HFBackend, SamplingParams
    from sx_dagster.ml.tiny import save_tiny

    with tempfile.TemporaryDirectory() as d:
        save_tiny(model, tok, d)
        be = HFBackend(d, device, "float32", 256, prefix_cache=False)
        prompts = [question_prompt(e.question) for e in test]
        gens = be.generate(prompts, SamplingParams(1, 0.0, 1.0, 64, 0, "synthetic"))
        ok = sum(grade(x[0].text, e.answer, "synthetic")[1] for x, e in zip(gens, test, strict=True))
        hit = 0
        if n > 1:
            samples = be.generate(prompts, SamplingParams(n, 0.7, 1.0, 64, 1, "synthetic"))
            hit = sum(any(grade(g.text, e.answer, "synthetic")[1] for g in x) for x, e in zip(samples, test, strict=True))
        be.close()
    return round(100 * ok / len(test), 1), round(100 * hit / len(test), 1)


def rft_rows(model, tok, train, exp, device: str) -> tuple[list[str], list[str]]:
    """RFT data as ``rft_checkpoint`` builds it: N samples per train question from ``model``, the
    kept correct ones (core.rft.select_rft) and, with ``rft.include_gold``, the gold rationales."""
    from sx_dagster.core.answers import grade
    from sx_dagster.core.prompts import question_prompt
    from sx_dagster.core.rft import select_rft
    from sx_dagster.ml.generation import HFBackend, SamplingParams
    from sx_dagster.ml.tiny import save_tiny

    sp = exp.sampling
    with tempfile.TemporaryDirectory() as d:
        save_tiny(model, tok, d)
        be = HFBackend(d, device, "float32", exp.gen_batch_size, prefix_cache=False)
        sampled = sorted(train, key=lambda e: e.id)[: sp.questions]  # sampled_rationales: the first by id
        prompts = [question_prompt(e.question) for e in sampled]
        gens = be.generate(prompts, SamplingParams(sp.n, sp.temperature, sp.top_p, sp.max_new_tokens, exp.seed, "synthetic"))
        be.close()
    out_p, out_c = [], []
    for p, e, g in zip(prompts, sampled, gens, strict=True):
        texts = [x.text for x in g]
        for i in select_rft(texts, [grade(t, e.answer, "synthetic")[1] for t in texts], "synthetic", exp.rft.max_per_question):
            out_p.append(p)
            out_c.append(texts[i])
    n_samples = len(out_p)
    if exp.rft.include_gold:
        out_p += [question_prompt(e.question) for e in train]
        out_c += [e.rationale for e in train]
    print(f"RFT data: {n_samples} kept samples + {len(out_p) - n_samples} gold", flush=True)
    return out_p, out_c


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Greedy test accuracy against optimizer steps, one line per (stage, seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for stage, style in (("sft", "-"), ("rft", "--")):
        for seed in sorted({r["seed"] for r in rows}):
            pts = [(r["step"], r["sft_accuracy"]) for r in rows if r["stage"] == stage and r["seed"] == seed]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, marker=".", label=f"{stage.upper()} seed {seed}")
                last = pts[-1][0]
                ax.axvspan(0.8 * last, last, alpha=0.04, color="k")
    ax.set_xlabel("optimizer step (shaded: the last fifth)")
    ax.set_ylabel("greedy test accuracy (%)")
    ax.set_title(title[:110], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from paper_table import write_experiments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny-synthetic")
    p.add_argument("--seeds", default="0")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--label", default="curve")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for a quick screen (fp32 either way)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="TRL's default; 0 = no clipping")
    p.add_argument("--pass-n", type=int, default=0, help="after the last step, sample N per test question and report pass@N")
    p.add_argument("--results", type=Path, default=RESULTS, help="CSV to append to")
    p.add_argument("--rft", action="store_true", help="then sample from the SFT model and train RFT from the base model, as the graph does")
    p.add_argument("--plot", type=Path, help="write accuracy against steps (SFT, and RFT with --rft) to this PNG")
    args = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="sx-curve-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    names = write_experiments(args.experiment, seeds, args.set, out)
    os.environ["SX_EXPERIMENTS_FILE"] = str(out / "experiments.yaml")

    import torch
    from transformers import get_scheduler

    from sx_dagster.config import get_experiment
    from sx_dagster.core.prompts import question_prompt
    from sx_dagster.core.tasks import synthetic_split
    from sx_dagster.ml.tiny import build_tiny_model, train_tokenizer

    rows = []
    for seed, name in zip(seeds, names, strict=True):
        exp = get_experiment(name)
        torch.manual_seed(seed)
        train, test = (
            synthetic_split(exp.task.n_train, exp.task.seed, "train", exp.task.synthetic),
            synthetic_split(exp.task.n_test, exp.task.seed, "test", exp.task.synthetic)[: args.n_test],
        )
        tok = train_tokenizer([e.question + "\n" + (e.rationale or "") for e in train], exp.model.tiny.vocab_size)
        model = build_tiny_model(exp.model.tiny, tok, exp.seed).to(args.device)
        t0 = time.perf_counter()
        print(f"[{name}] {sum(x.numel() for x in model.parameters()):,} params, {len(train)} train questions", flush=True)

        def fit(model, prompts: list[str], comps: list[str], sec, stage: str, seed=seed, name=name, tok=tok, test=test) -> None:
            bs = sec.batch_size * sec.grad_accum
            steps = int(math.ceil(math.ceil(len(prompts) / bs) * sec.epochs))
            opt = torch.optim.AdamW(model.parameters(), lr=sec.learning_rate, weight_decay=sec.weight_decay)
            sched = get_scheduler(sec.lr_scheduler, opt, num_warmup_steps=int(sec.warmup_ratio * steps), num_training_steps=steps)
            g = torch.Generator().manual_seed(seed)
            order: list[int] = []
            train_s = 0.0
            print(f"[{name}] {stage}: {len(prompts)} rows, {steps} steps at batch {bs}", flush=True)
            model.train()
            for step in range(1, steps + 1):
                if len(order) < bs:
                    order += torch.randperm(len(prompts), generator=g).tolist()
                idx, order = order[:bs], order[bs:]
                t = time.perf_counter()
                enc_p = tok([prompts[i] for i in idx], add_special_tokens=False)["input_ids"]
                enc_c = tok([comps[i] for i in idx], add_special_tokens=False)["input_ids"]
                seqs = [a + b for a, b in zip(enc_p, enc_c, strict=True)]
                width = max(map(len, seqs))
                ids = torch.full((bs, width), tok.pad_token_id)
                labels = torch.full((bs, width), -100)
                mask = torch.zeros((bs, width), dtype=torch.long)
                for r, (a, s) in enumerate(zip(enc_p, seqs, strict=True)):
                    ids[r, : len(s)] = torch.tensor(s)
                    mask[r, : len(s)] = 1
                    labels[r, len(a) : len(s)] = torch.tensor(s[len(a) :])
                ids, mask, labels = ids.to(args.device), mask.to(args.device), labels.to(args.device)
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                if args.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad()
                train_s += time.perf_counter() - t
                if step % args.eval_every == 0 or step == steps:
                    model.eval()
                    n = args.pass_n if step == steps else 1
                    acc, pass_n = accuracy(model, tok, test, args.device, n)
                    row = {"seed": seed, "step": step, "steps": steps, "sft_accuracy": acc, "train_s": round(train_s, 1)}
                    row |= {"pass_at_n": f"{pass_n} @{n}" if n > 1 else "", "device": args.device, "loss": round(loss.item(), 4)}
                    rows.append(row | {"stage": stage})
                    extra = f", pass@{n} {pass_n:5.1f}%" if n > 1 else ""
                    print(
                        f"  {stage} step {step:5d}/{steps}: greedy {acc:5.1f}%{extra}, loss {loss.item():.3f} ({train_s:.0f} s)", flush=True
                    )
                    model.train()
            model.eval()

        fit(model, [question_prompt(e.question) for e in train], [e.rationale + tok.eos_token for e in train], exp.sft, "sft")
        if args.rft:
            rft_prompts, rft_comps = rft_rows(model, tok, train, exp, args.device)
            rft_model = build_tiny_model(exp.model.tiny, tok, exp.seed).to(args.device)
            fit(rft_model, rft_prompts, [c + tok.eos_token for c in rft_comps], exp.rft, "rft")
        print(f"[{name}] wall {time.perf_counter() - t0:.0f} s", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    new = not args.results.exists()
    with args.results.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["date", "label", "overrides", *[k for k in rows[0] if k != "stage"]])
        if new:
            w.writeheader()
        now = dt.datetime.now().isoformat(timespec="minutes")
        for r in rows:
            r = dict(r)
            label = args.label + ("/rft" if r.pop("stage") == "rft" else "")
            w.writerow({"date": now, "label": label, "overrides": " ".join(args.set), **r})
    if args.plot:
        plot(rows, args.plot, f"{args.experiment} {' '.join(args.set)}".strip())


if __name__ == "__main__":
    main()
