"""sampled_rationales: N rationales per training question from the SFT model (paper §3.1),
each graded by its final answer. Committed in chunks of questions; a re-run after a crash
continues from the last committed chunk."""

import os
import signal

import dagster as dg
import pandas as pd

from sx_dagster.assets._stage import Stage, code_version, experiment_partitions
from sx_dagster.core.answers import extract_answer, is_correct
from sx_dagster.core.calculator import check_annotations
from sx_dagster.core.prompts import question_prompt
from sx_dagster.resources import AcceleratorResource, GeneratorResource, LineageStore

CODE = code_version("sampling")
# Test hook: kill -9 this process after this many chunks were committed in this run,
# in the middle of generating the next one (tests/test_pipeline.py uses it).
CRASH_AFTER_CHUNKS_ENV = "SX_TEST_CRASH_AFTER_CHUNKS"


def crash_if_asked(committed_this_run: int) -> None:
    limit = os.environ.get(CRASH_AFTER_CHUNKS_ENV)
    if limit is not None and committed_this_run >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


@dg.asset(
    partitions_def=experiment_partitions(),
    group_name="sampling",
    kinds={"pytorch", "duckdb"},
    code_version=CODE,
    deps=["sft_checkpoint", "task_dataset"],
    check_specs=[
        dg.AssetCheckSpec(
            "n_samples_per_question",
            asset="sampled_rationales",
            blocking=True,
            description="every training question holds exactly N samples",
        )
    ],
    description="N sampled rationales per training question from the SFT model, graded by final answer.",
)
def sampled_rationales(
    context: dg.AssetExecutionContext,
    lineage: LineageStore,
    accelerator: AcceleratorResource,
    generator: GeneratorResource,
) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "sampled_rationales", CODE, sections=("sampling",), upstream=("task_dataset", "sft_checkpoint"))
    if (skip := stage.unchanged(checks=lambda: [n_per_question_check(lineage, stage)])) is not None:
        return skip
    exp, cfg = stage.exp, stage.exp.sampling
    questions = lineage.query(
        "SELECT id, question, answer FROM questions WHERE experiment = ? AND split = 'train' ORDER BY id", [stage.name]
    )
    chunks = [questions.iloc[i : i + cfg.chunk_questions] for i in range(0, len(questions), cfg.chunk_questions)]
    done = lineage.committed_chunks(stage.name, "sampled_rationales", stage.fingerprint, ["samples"])
    if done:
        stage.log(f"resuming: {len(done)}/{len(chunks)} chunks already committed")
    model_path, ckpt_id = stage.input_checkpoint("sft_checkpoint")
    backend = None
    committed = 0
    for c, chunk in enumerate(chunks):
        if c in done:
            continue
        if backend is None:
            backend = generator.load(model_path, accelerator, exp.gen_batch_size, stage.log)
        seed = exp.seed * 1_000_003 + c
        from sx_dagster.ml.generation import SamplingParams

        params = SamplingParams(cfg.n, cfg.temperature, cfg.top_p, cfg.max_new_tokens, seed, exp.task.name)
        if committed:
            crash_if_asked(committed)
        outs = backend.generate([question_prompt(q) for q in chunk["question"]], params)
        rows = []
        for qid, gold, gens in zip(chunk["id"], chunk["answer"], outs, strict=True):
            for j, g in enumerate(gens):
                pred = extract_answer(g.text, exp.task.name)
                rows.append(
                    dict(
                        id=f"{qid}/s{j}",
                        question_id=qid,
                        idx=j,
                        text=g.text,
                        pred=pred,
                        correct=is_correct(pred, gold, exp.task.name),
                        annotations_ok=check_annotations(g.text),
                        n_tokens=g.n_tokens,
                        chunk=c,
                        checkpoint_id=ckpt_id,
                        seed=seed,
                        parent_id=qid,
                    )
                )
        df = pd.DataFrame(rows)
        df["experiment"], df["run_id"] = stage.name, stage.run_id
        lineage.commit_chunk(stage.name, "sampled_rationales", c, stage.fingerprint, stage.run_id, {"samples": df})
        committed += 1
        stage.log(f"chunk {c + 1}/{len(chunks)}: {len(df)} samples, {df['correct'].mean():.1%} correct")
    if backend is not None:
        backend.close()
    check = n_per_question_check(lineage, stage)
    stats = lineage.query(
        "SELECT count(*) AS n, avg(correct::INT) AS acc, "
        "count(DISTINCT CASE WHEN correct THEN question_id END) AS q_with_correct, "
        "count(DISTINCT CASE WHEN NOT correct THEN question_id END) AS q_with_wrong FROM samples WHERE experiment = ?",
        [stage.name],
    ).iloc[0]
    meta = {
        "samples": int(stats["n"]),
        "sample_accuracy": round(float(stats["acc"] or 0), 4),
        "questions_with_a_correct_sample": int(stats["q_with_correct"]),
        "questions_with_a_wrong_sample": int(stats["q_with_wrong"]),
        "chunks": len(chunks),
        "chunks_resumed": len(done),
    }
    if backend is not None:
        meta["generated_tokens_per_s"] = round(backend.stats.tokens_per_second(), 1)
    return stage.done(meta, check_results=[check])


def n_per_question_check(lineage: LineageStore, stage: Stage) -> dg.AssetCheckResult:
    """Every training question holds exactly N samples."""
    c = lineage.query(
        "SELECT count(*) AS nq, coalesce(min(n), 0) AS lo, coalesce(max(n), 0) AS hi FROM "
        "(SELECT q.id, count(s.id) AS n FROM questions q LEFT JOIN samples s ON s.experiment = q.experiment "
        "AND s.question_id = q.id WHERE q.experiment = ? AND q.split = 'train' GROUP BY q.id)",
        [stage.name],
    ).iloc[0]
    n = stage.exp.sampling.n
    return dg.AssetCheckResult(
        check_name="n_samples_per_question",
        passed=bool(int(c["lo"]) == int(c["hi"]) == n),
        metadata={"questions": int(c["nq"]), "min": int(c["lo"]), "max": int(c["hi"]), "n": n},
    )
