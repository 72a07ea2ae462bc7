"""A miniature of the paper's Figure 3 on the embedded default, over seeds, with first-pit
accuracy against the synthetic task's true first error.

    python benchmarks/paper_table.py --seeds 0,1,2,3,4            # tiny-synthetic, 5 seeds, graded on test
    python benchmarks/paper_table.py --seeds 0,1,2 --split dev --set dpo.learning_rate=5e-6 --label lr5e-6
    python benchmarks/paper_table.py --seeds 0 --threads 1                # a perturbation of the arithmetic
    python benchmarks/paper_table.py --seeds 0 --dtype bfloat16           # another (CPUs with native bf16)
    python benchmarks/paper_table.py --seeds 0,1,2 --rounds 3              # iterative rounds 1..3 (issue 26)

``--split dev`` grades the dev questions held out of the training data (``task.n_dev``): the
split every choice is made on; test is read once per configuration, for the report.
``--threads N`` (torch's intra-op threads: another reduction order) and ``--dtype`` (the
accelerator's precision) perturb the arithmetic: a result that holds survives both.

For each seed, the whole graph of ``--experiment`` runs (as ``<experiment>-s<seed>``: same
data, model init, sampling and training order from the seed) in its own DuckDB under
``--out``. Then, on each seed's rejected rationales, the explorer re-runs the first-pit search
for every k in ``--ks`` (early-stop: the same pits as the paper's linear scan, and k=8's first
four draws are k=4's) and with ``pool-reuse``; pits are compared with ``true_first_error``.

Prints the tables; writes ``paper_table.csv`` (per seed), ``first_pit_vs_k.csv`` and
``paper_table.png`` (and, on the synthetic task, ``first_errors.csv``: the kind of each model's
first wrong step on test) to ``--out``, and appends one row per seed to
``benchmarks/results/paper_table_runs.csv`` (every configuration tried, kept in git).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ["base (few-shot)", "SFT", "RFT", "outcome DPO", "Self-Explore"]
RESULTS = HERE / "results" / "paper_table_runs.csv"
RIGHT_ANSWER_WRONG_STEP = "right answer, wrong step"


def _set(tree: dict, dotted: str, value: str) -> None:
    *path, leaf = dotted.split(".")
    for key in path:
        tree = tree.setdefault(key, {})
    tree[leaf] = yaml.safe_load(value)


def write_experiments(experiment: str, seeds: list[int], overrides: list[str], out: Path) -> list[str]:
    """A YAML with one copy of ``experiment`` per seed, overrides applied; returns their names."""
    from sx_dagster.config import DEFAULT_EXPERIMENTS_FILE

    raw = yaml.safe_load(Path(DEFAULT_EXPERIMENTS_FILE).read_text())
    if experiment not in raw["experiments"]:
        raise SystemExit(f"unknown experiment {experiment!r}; have {sorted(raw['experiments'])}")
    names, grid = [], {}
    for seed in seeds:
        body = json.loads(json.dumps(raw["experiments"][experiment]))
        body["seed"] = seed
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--set wants key=value, got {item!r}")
            _set(body, key, value)
        body.pop("schedule", None)
        names.append(f"{experiment}-s{seed}")
        grid[names[-1]] = body
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiments.yaml").write_text(yaml.safe_dump({"defaults": raw.get("defaults", {}), "experiments": grid}, sort_keys=False))
    return names


def _scalar(store, sql: str, name: str) -> float:
    return store.query(sql, [name]).iloc[0, 0]


def pit_rates(pits: list[tuple[int | None, int | None]]) -> dict[str, float]:
    """Where the explorer's first pit falls against the true first error, from (pit, true first error)."""
    from sx_dagster.core.explore import pit_agreement

    a = pit_agreement(pits)
    return {
        "rationales": a.rationales,
        "pit_equals_true": round(a.equal, 4),
        "pit_earlier": round(a.earlier, 4),
        "pit_later": round(a.later, 4),
        "no_pit": round(a.no_pit, 4),
        "false_pit_rate": round(a.false_pit_rate, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny-synthetic")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. dpo.epochs=3")
    p.add_argument("--ks", default="1,2,4,8", help="k values for first-pit accuracy")
    p.add_argument("--label", default="default", help="name of this configuration in the results file")
    p.add_argument("--out", default=str(HERE / "out" / "paper_table"))
    p.add_argument("--skip-k-sweep", action="store_true")
    p.add_argument("--pass-n-test", type=int, default=500, help="test questions for pass@N of SFT and RFT (0 = skip)")
    p.add_argument("--split", choices=["test", "dev"], default="test", help="the split eval_scores grades (choose on dev)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default): a perturbation")
    p.add_argument("--dtype", default="auto", help="the accelerator's dtype (auto, float32, bfloat16): a perturbation")
    p.add_argument("--rounds", type=int, default=1, help="rounds.count: rounds 2.. sample and explore with the previous round's model")
    args = p.parse_args()
    if args.split == "dev":
        args.set = [*args.set, "eval.split=dev"]
    if args.rounds > 1:
        args.set = [*args.set, f"rounds.count={args.rounds}"]

    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = write_experiments(args.experiment, seeds, args.set, out)
    os.environ["SX_EXPERIMENTS_FILE"] = str(out / "experiments.yaml")  # before sx_dagster.assets is imported
    os.environ["SX_DATA_DIR"] = str(out / "data")

    import dagster as dg
    import pandas as pd
    import torch

    from sx_dagster.assets import rounds_graph
    from sx_dagster.config import get_experiment
    from sx_dagster.core.answers import grade
    from sx_dagster.core.explore import exploration_seed, explore, pool_steps, sample_pool
    from sx_dagster.core.prompts import question_prompt
    from sx_dagster.core.stats import pass_at_k
    from sx_dagster.definitions import resources
    from sx_dagster.ml.explorer import explorer_generate
    from sx_dagster.ml.generation import HFBackend, SamplingParams
    from sx_dagster.resources import AcceleratorResource, queries
    from sx_dagster.stopping import last_stop

    if args.threads:
        torch.set_num_threads(args.threads)  # the graph runs in this process on CPU (in_process executor)
    ks = [int(k) for k in args.ks.split(",")]
    per_seed, k_rows = [], []
    first_errors: dict[str, Counter[str]] = {}  # model -> first-error kind -> count, pooled over seeds
    signs: dict[str, Counter[tuple[str, bool]]] = {}  # model -> (sign of the first transfer, written right) -> count
    correct: dict[str, list[list[bool]]] = {m: [] for m in MODELS}  # per seed, per question
    steps: dict[str, list[list[bool]]] = {m: [] for m in MODELS}  # every step right (synthetic), likewise
    by_round: dict[str, list[list[bool]]] = {}  # "<model> r<round>" -> per seed, per question (--rounds)
    for seed, name in zip(seeds, names, strict=True):
        res = resources()
        res["accelerator"] = AcceleratorResource(dtype=args.dtype)
        store = res["lineage"]
        t = time.perf_counter()
        result = dg.materialize(rounds_graph(args.rounds), partition_key=name, resources=res, raise_on_error=False)
        if (sig := last_stop()) is not None:
            raise SystemExit(f"[{name}] stopped by {sig}; the same command resumes (finished stages are kept)")
        if not result.success:
            raise SystemExit(f"[{name}] the graph failed: see the errors above")
        wall = time.perf_counter() - t
        scores = store.query("SELECT model, accuracy FROM eval_scores WHERE experiment = ?", [name])
        acc = dict(zip(scores["model"], scores["accuracy"], strict=True))
        pits = store.query("SELECT pit, true_first_error FROM pits WHERE experiment = ?", [name])
        pit_list = [
            (None if pd.isna(x) else int(x), None if pd.isna(y) else int(y))
            for x, y in zip(pits["pit"], pits["true_first_error"], strict=True)
        ]
        row = {
            "seed": seed,
            "split": args.split,
            "threads": torch.get_num_threads(),
            "dtype": res["accelerator"].resolve_dtype(),
            "wall_s": round(wall, 1),
            **{m: round(100 * acc.get(m, float("nan")), 1) for m in MODELS},
            "samples_correct": round(float(_scalar(store, "SELECT avg(correct::INT) FROM samples WHERE experiment = ?", name)), 3),
            "rft_rows": int(_scalar(store, "SELECT count(*) FROM rft_data WHERE experiment = ?", name)),
            "d_pair": int(_scalar(store, "SELECT count(*) FROM outcome_pairs WHERE experiment = ?", name)),
            "pits_found": sum(pit is not None for pit, _ in pit_list),
            "d_g_pair": int(_scalar(store, "SELECT count(*) FROM dpo_pairs WHERE experiment = ?", name)),
            **{f"pipeline_{k}": v for k, v in pit_rates(pit_list).items() if k != "rationales"},
        }
        row.update(process_reward_columns(store, name))
        if args.rounds > 1:
            row.update(round_columns(store, name, args.rounds, by_round))
        preds = store.query(
            "SELECT model, question_id, correct, steps_right, text FROM eval_predictions WHERE experiment = ? ORDER BY question_id",
            [name],
        )
        for m in MODELS:
            mine = preds[preds["model"] == m]
            correct[m].append(mine["correct"].astype(bool).tolist())
            if mine["steps_right"].notna().all():
                steps[m].append(mine["steps_right"].astype(bool).tolist())
                row[f"{m} steps_right"] = round(100 * mine["steps_right"].astype(bool).mean(), 1)
        exp = get_experiment(name)
        if exp.task.name == "synthetic":
            # Which errors each model still makes (the task's ground truth): what a preference could fix.
            test_meta = store.query("SELECT id, meta FROM questions WHERE experiment = ? AND split = ?", [name, args.split])
            tally_synthetic(test_meta, preds, first_errors, signs)
        if args.pass_n_test and args.split == "test":
            # The leading indicator: DPO on self-generated pairs sharpens what the model can already
            # sample, so it needs pass@N on test well above greedy accuracy.
            test = store.query(
                "SELECT question, answer FROM questions WHERE experiment = ? AND split = 'test' ORDER BY id LIMIT ?",
                [name, args.pass_n_test],
            )
            n = exp.sampling.n
            params = SamplingParams(n, exp.sampling.temperature, exp.sampling.top_p, exp.eval.max_new_tokens, exp.seed + 7, exp.task.name)
            for label, asset in (("SFT", "sft_checkpoint"), ("RFT", "rft_checkpoint")):
                acc_res = res["accelerator"]
                path = store.latest_lineage(name, asset)["checkpoint_path"]
                backend = HFBackend(path, acc_res.resolve_device(), acc_res.resolve_dtype(), exp.gen_batch_size)
                gens = backend.generate([question_prompt(q) for q in test["question"]], params)
                backend.close()
                c = [sum(grade(g.text, a, exp.task.name)[1] for g in gs) for gs, a in zip(gens, test["answer"], strict=True)]
                row[f"{label}_pass@1"] = round(100 * sum(pass_at_k(n, x, 1) for x in c) / len(c), 1)
                row[f"{label}_pass@{n}"] = round(100 * sum(pass_at_k(n, x, n) for x in c) / len(c), 1)
        per_seed.append(row)
        print(f"[{name}] {wall:.0f} s: " + ", ".join(f"{m} {row[m]}" for m in MODELS), flush=True)

        if args.skip_k_sweep:
            continue
        rejected = queries.rejected_rationales(store, name)
        explorer = store.latest_lineage(name, "rft_checkpoint")["checkpoint_path"]
        pool = pool_steps(sample_pool(queries.correct_samples(store, name), exp.task.name))
        acc_res = res["accelerator"]
        for strategy, k in [("early-stop", k) for k in ks] + [("pool-reuse", 4)]:
            cfg = exp.model_copy(update={"explore": exp.explore.model_copy(update={"strategy": strategy, "k": k})})
            backend = HFBackend(explorer, acc_res.resolve_device(), acc_res.resolve_dtype(), exp.gen_batch_size)
            generate = explorer_generate(backend, cfg.explore, exploration_seed(exp.seed), exp.task.name)
            _, found = explore(rejected, generate, cfg.explore, exp.task.name, pool)
            tokens = sum(f.generated_tokens for f in found)
            rates = pit_rates([(f.pit, f.true_first_error) for f in found])
            k_rows.append({"seed": seed, "strategy": strategy, "k": k, **rates, "generated_tokens": tokens})

    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "paper_table.csv", per_seed)
    if k_rows:
        _write_csv(out / "first_pit_vs_k.csv", k_rows)
    summary = {m: [r[m] for r in per_seed] for m in MODELS}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch CPU" + (" (CUDA)" if _cuda() else "")
    perturb = f"threads {per_seed[0]['threads']}, dtype {per_seed[0]['dtype']}"
    print(f"\n{args.experiment}, {len(seeds)} seeds ({args.seeds}), label {args.label!r}, {dt.date.today()}, {machine}, {perturb}")
    print(f"greedy accuracy on the {args.split} split, %:")
    _seed_table(seeds, summary)
    _paired_table(correct, "right")
    if all(len(steps[m]) == len(seeds) for m in MODELS[1:]):
        # The paper grades the final answer; the synthetic task can check every step, and a wrong
        # step that lands on the right answer (e.g. "4 - 5 = 9") counts as right above.
        print(f"\nEvery step right (the synthetic task's ground truth), greedy, % of {args.split} questions:")
        _seed_table(seeds, {m: [r[f"{m} steps_right"] for r in per_seed] for m in MODELS})
        _paired_table(steps, "every step right")
    passes = [c for c in per_seed[0] if "pass@" in c]
    if passes:
        print("\npass@k on test at the sampling temperature (greedy accuracy is in the table above):")
        _md_table(["seed", *passes], [[r["seed"], *(r[c] for c in passes)] for r in per_seed])
    if first_errors:
        _write_csv(out / "first_errors.csv", synthetic_tables(first_errors, signs))
    prm_cols = [c for c in per_seed[0] if c.startswith(("prm ", "bon "))]
    if prm_cols:
        print(f"\nProcess rewards (issue 25): step labels, the PRM, best-of-N on {args.split} (%), mean and std over seeds:")
        _md_table(["column", "mean", "std", "per seed"], [_spread(c, [r.get(c) for r in per_seed]) for c in prm_cols])
    if args.rounds > 1:
        _rounds_tables(per_seed, by_round, args.rounds, args.split)
    counts = ["d_pair", "pits_found", "d_g_pair", "samples_correct", "wall_s"]
    print()
    _md_table(["seed", *counts], [[r["seed"], *(r[c] for c in counts)] for r in per_seed])
    if k_rows:
        print("\nFirst pit vs the true first error (mean over seeds):")
        print("| strategy | k | equal | earlier | later | no pit | false-pit rate | generated tokens |\n|---|---|---|---|---|---|---|---|")
        for strategy, k in dict.fromkeys((r["strategy"], r["k"]) for r in k_rows):
            g = [r for r in k_rows if r["strategy"] == strategy and r["k"] == k]
            cols = ["pit_equals_true", "pit_earlier", "pit_later", "no_pit", "false_pit_rate"]
            means = [statistics.mean(r[c] for r in g) for c in cols]
            tokens = statistics.mean(r["generated_tokens"] for r in g)
            print(f"| {strategy} | {k} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {tokens:,.0f} |")
    _chart(out / "paper_table.png", summary, f"{args.experiment} ({args.label}), {len(seeds)} seeds, {dt.date.today()}")
    RESULTS.parent.mkdir(exist_ok=True)
    now = dt.datetime.now().isoformat(timespec="minutes")
    run = {"date": now, "label": args.label, "experiment": args.experiment, "overrides": " ".join(args.set)}
    _append_rows(RESULTS, [{**run, **r} for r in per_seed])
    print(f"\nwrote {out}: paper_table.csv, paper_table.png, first_pit_vs_k.csv; appended to {RESULTS.relative_to(ROOT)}")


def tally_synthetic(test_meta, preds, first_errors: dict[str, Counter[str]], signs: dict[str, Counter[tuple[str, bool]]]) -> None:
    """Add one seed's test predictions (``preds``: model, question_id, text, correct; ``test_meta``:
    id, meta) to the per-model counts of first-error kinds and of transfer signs written right."""
    from sx_dagster.core.synthetic import SyntheticProblem, first_error_kind, transfer_sign

    problems = {q: SyntheticProblem.from_json(m) for q, m in zip(test_meta["id"], test_meta["meta"], strict=True)}
    for m, qid, text, ok in zip(preds["model"], preds["question_id"], preds["text"], preds["correct"], strict=True):
        if m == MODELS[0]:
            continue
        if (kind := first_error_kind(problems[qid], text)) is not None:
            # A right final answer after a wrong step counts as correct in the accuracy table.
            first_errors.setdefault(m, Counter())[RIGHT_ANSWER_WRONG_STEP if ok else kind] += 1
        if (sign := transfer_sign(problems[qid], text)) is not None:
            signs.setdefault(m, Counter())[sign] += 1


def synthetic_tables(first_errors: dict[str, Counter[str]], signs: dict[str, Counter[tuple[str, bool]]]) -> list[dict]:
    """Print the first-error kinds per model and, when the task has transfers, the sign each model
    writes at the first one (learned rule, or a lean to one sign?); returns the first table's rows."""
    models = [m for m in MODELS if m in first_errors]
    kinds = sorted({k for c in first_errors.values() for k in c}, key=lambda k: -sum(c[k] for c in first_errors.values()))
    rows = [{"kind": k, **{m: first_errors[m][k] for m in models}} for k in kinds]
    print(
        "\nFirst wrong step of the test rationales, pooled over seeds (synthetic ground truth; @transfer: a step told as "
        f"a transfer; '{RIGHT_ANSWER_WRONG_STEP}': graded correct above):"
    )
    _md_table(["kind", *models], [[r["kind"], *(r[m] for m in models)] for r in rows])
    if signs:
        print("\nSign written at the first transfer step, when reached (pooled over seeds):")
        table = []
        for m in [m for m in MODELS if m in signs]:
            cells = []
            for ops in (("+",), ("-",), ("+", "-")):
                right = sum(signs[m][(o, True)] for o in ops)
                n = right + sum(signs[m][(o, False)] for o in ops)
                cells.append(f"{100 * right / max(n, 1):.1f}% of {n}")
            table.append([m, *cells])
        _md_table(["model", "+ transfers right", "- transfers right", "all right"], table)
    return rows


def process_reward_columns(store, name: str) -> dict:
    """Issue 25's numbers of one seed: label agreement with the true first error, the PRM's held-out
    accuracy and first-low-step agreement, and best-of-N accuracy per model and selection rule."""
    out: dict = {}
    meta = {
        a: json.loads((store.latest_lineage(name, a) or {}).get("metadata") or "{}")
        for a in ("step_labels", "process_reward_model", "best_of_n")
    }
    keys = {
        "prm labels agree": ("step_labels", "labels_agree_with_true_first_error", 100),
        "prm labelled steps": ("step_labels", "labelled_steps", 1),
        "prm bad steps": ("step_labels", "bad_steps", 1),
        "prm held-out step acc": ("process_reward_model", "held_out_step_accuracy", 100),
        "prm held-out bad-step acc": ("process_reward_model", "held_out_bad_step_accuracy", 100),
        "prm held-out first low = true": ("process_reward_model", "held_out_first_low_equals_true_first_error", 100),
        "prm test first low = true": ("best_of_n", "prm_first_low_equals_true_first_error", 100),
        "prm test wrong rationales": ("best_of_n", "wrong_rationales_scored", 1),
        "prm test low step on right": ("best_of_n", "prm_low_step_on_right_rationales", 100),
        "prm test AUC min": ("best_of_n", "prm_auc_min", 100),
        "prm test AUC last": ("best_of_n", "prm_auc_last", 100),
        "prm train s": ("process_reward_model", "train_seconds", 1),
    }
    for col, (asset, key, scale) in keys.items():
        if meta[asset].get(key) is not None:
            out[col] = round(scale * meta[asset][key], 1)
    bon = store.query("SELECT model, rule, accuracy FROM best_of_n_scores WHERE experiment = ?", [name])
    for r in bon.itertuples():
        out[f"bon {r.model} {r.rule}"] = round(100 * r.accuracy, 1)
    return out


def round_columns(store, name: str, rounds: int, by_round: dict[str, list[list[bool]]]) -> dict:
    """Columns ``r<k> <model>`` (accuracy) and ``r<k> <count>`` for rounds 1..``rounds`` (round 1's
    models repeat the row's own columns), and each round's per-question correctness into ``by_round``."""
    from sx_dagster.assets.evaluate import ROUND_MODELS, rounds_report  # after SX_EXPERIMENTS_FILE is set

    out = {}
    for r in rounds_report(store, name, rounds).to_dict("records"):
        k = r["round"]
        out.update({f"r{k} {m}": round(r[m], 1) for m in ROUND_MODELS})
        out.update({f"r{k} {c}": r[c] for c in ("sample_accuracy", "outcome_pairs", "pits", "g_pairs")})
        out[f"r{k} sample_accuracy"] = round(out[f"r{k} sample_accuracy"], 1)
        rs = store.for_round(k)
        preds = rs.query("SELECT model, question_id, correct FROM eval_predictions WHERE experiment = ? ORDER BY question_id", [name])
        for m in ROUND_MODELS:
            by_round.setdefault(f"{m} r{k}", []).append(preds[preds["model"] == m]["correct"].astype(bool).tolist())
    return out


def _rounds_tables(per_seed: list[dict], by_round: dict[str, list[list[bool]]], rounds: int, split: str) -> None:
    """Accuracy against round (mean and std over seeds), the counts each round trained on, and
    each round's models against round 1's: paired per-seed differences and a bootstrap over seeds
    and questions (the seed noise kept in)."""
    from sx_dagster.assets.evaluate import ROUND_MODELS
    from sx_dagster.core.stats import seed_question_bootstrap

    print(f"\nRounds (issue 26): greedy {split} accuracy by round, mean ± std over seeds (%); each round samples and "
          "explores with the previous round's Self-Explore model")  # fmt: skip
    cols = ["sample_accuracy", "outcome_pairs", "pits", "g_pairs", *ROUND_MODELS]
    rows = []
    for k in range(1, rounds + 1):
        cells = []
        for c in cols:
            vals = [r.get(f"r{k} {c}") for r in per_seed]
            xs = [float(v) for v in vals if v is not None and v == v]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):.1f} ± {sd:.1f}" if xs else "-")
        rows.append([k, *cells])
    _md_table(["round", "sample accuracy", "D_pair", "pits", "D_g-pair", *ROUND_MODELS], rows)
    print("\nEach round's model against round 1's (same questions): per-seed differences (points), and a 95% bootstrap "
          "interval and p over seeds, then questions")  # fmt: skip
    rows = []
    for k in range(2, rounds + 1):
        for m in ROUND_MODELS:
            a, b = by_round.get(f"{m} r{k}"), by_round.get(f"{m} r1")
            if not a or not b or len(a) != len(b):
                continue
            boot = seed_question_bootstrap(a, b)
            mean = statistics.mean(boot.seed_diffs)
            rows.append([f"{m} r{k} vs r1", f"{mean:+.2f}", " / ".join(f"{d:+.1f}" for d in boot.seed_diffs),
                         f"[{boot.ci_low:+.2f}, {boot.ci_high:+.2f}]", f"{boot.p_value:.3g}"])  # fmt: skip
    _md_table(["comparison", "mean diff", "per seed", "95% CI (seeds x questions)", "p"], rows)


def _spread(col: str, vals: list) -> list:
    xs = [v for v in vals if v is not None and v == v]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return [col, f"{statistics.mean(xs):.1f}" if xs else "-", f"{sd:.1f}", " / ".join(f"{v}" for v in vals)]


def _seed_table(seeds: list[int], summary: dict[str, list[float]]) -> None:
    """Per-seed values of each model with their mean and sample standard deviation."""
    rows = []
    for m, vals in summary.items():
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append([m, *(f"{v:.1f}" for v in vals), f"{statistics.mean(vals):.1f}", f"{sd:.1f}"])
    _md_table(["model", *(f"seed {s}" for s in seeds), "mean", "std"], rows)


def _paired_table(per_question: dict[str, list[list[bool]]], what: str) -> None:
    """Self-Explore against each baseline on the same questions: McNemar and a bootstrap over
    questions pooled over seeds, and a bootstrap over seeds and questions, which keeps the
    seed-to-seed noise in (the one to read when seeds disagree)."""
    from sx_dagster.core.stats import paired_test, seed_question_bootstrap

    se = per_question["Self-Explore"]
    n, k = sum(map(len, se)), len(se)
    print(
        f"\nSelf-Explore against each baseline ({what}): McNemar exact and a 95% bootstrap interval over questions pooled "
        f"over the {k} seeds (n = {n}), and a 95% bootstrap interval and p over seeds, then questions"
    )
    rows = []
    for other in ("RFT", "outcome DPO", "SFT"):
        pooled = paired_test([x for s in se for x in s], [x for s in per_question[other] for x in s])
        boot = seed_question_bootstrap(se, per_question[other])
        per_seed = " / ".join(f"{d:+.1f}" for d in boot.seed_diffs)
        rows.append(
            [
                other,
                f"{pooled.diff_points:+.2f}",
                per_seed,
                pooled.a_only,
                pooled.b_only,
                f"{pooled.p_value:.3g}",
                f"[{pooled.ci_low:+.2f}, {pooled.ci_high:+.2f}]",
                f"[{boot.ci_low:+.2f}, {boot.ci_high:+.2f}]",
                f"{boot.p_value:.3g}",
            ]
        )
    header = ["Self-Explore vs", "diff (points)", "per seed", "SE only right", "other only right", "McNemar p (pooled)"]
    _md_table([*header, "95% CI (questions)", "95% CI (seeds x questions)", "p (seeds x questions)"], rows)


def _append_rows(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to a results CSV; a column the file lacks widens its header (old rows
    get empty cells) instead of landing under another column's name."""
    old: list[dict] = []
    header: list[str] = []
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header, old = list(reader.fieldnames or []), list(reader)
    fields = header + [k for r in rows for k in r if k not in header]
    fields = list(dict.fromkeys(fields))
    if fields != header:
        _write_csv(path, old + rows, fields)
    else:
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=fields).writerows(rows)


def _md_table(header: list[str], rows: list[list]) -> None:
    """Print a markdown table, the first column left-aligned and the rest right-aligned."""
    print("| " + " | ".join(header) + " |\n|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields or list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _chart(path: Path, summary: dict[str, list[float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    means = [statistics.mean(v) for v in summary.values()]
    sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in summary.values()]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(names, means, yerr=sds, capsize=4, color=["#999", "#4c72b0", "#55a868", "#c44e52", "#8172b2"])
    for i, (m, s) in enumerate(zip(means, sds, strict=True)):
        ax.text(i, m + s + 0.8, f"{m:.1f}", ha="center", fontsize=9)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
