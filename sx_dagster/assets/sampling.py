"""sampled_rationales: N rationales per training question from the SFT model (paper §3.1),
each graded by its final answer. Committed in chunks of questions; a re-run after a crash
continues from the last committed chunk."""

import dagster as dg
import pandas as pd

from sx_dagster.assets._chunks import run_chunks
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step
from sx_dagster.core.answers import grade
from sx_dagster.core.calculator import check_annotations
from sx_dagster.core.prompts import question_prompt
from sx_dagster.failures import step
from sx_dagster.resources import AcceleratorResource, GeneratorResource, LineageStore

CODE = code_version("sampling")


@dg.asset(
    partitions_def=experiment_partitions(),
    group_name="sft_and_rft",
    kinds={"pytorch", "duckdb"},
    code_version=CODE,
    **gpu_step(),
    deps=["sft_checkpoint", "task_dataset"],
    check_specs=[
        dg.AssetCheckSpec(
            "n_samples_per_question",
            asset="sampled_rationales",
            blocking=True,
            description="every sampled training question holds exactly N samples",
        )
    ],
    description="N sampled rationales per training question from the SFT model, graded by final answer.",
)
@step
def sampled_rationales(
    context: dg.AssetExecutionContext,
    lineage: LineageStore,
    accelerator: AcceleratorResource,
    generator: GeneratorResource,
) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "sampled_rationales", CODE, reads=("sampling", "seed", "task.name", "model.trust_remote_code"))
    if (skip := stage.unchanged(checks=lambda: [n_per_question_check(lineage, stage)])) is not None:
        return skip
    exp, cfg = stage.exp, stage.exp.sampling
    questions = sampled_questions(lineage, stage.name, cfg.questions)
    chunks = [questions.iloc[i : i + cfg.chunk_questions] for i in range(0, len(questions), cfg.chunk_questions)]
    model_path, ckpt_id = stage.input_checkpoint("sft_checkpoint")

    def sample_chunk(backend, c: int, chunk: pd.DataFrame) -> dict[str, pd.DataFrame]:
        from sx_dagster.ml.generation import SamplingParams

        seed = exp.seed * 1_000_003  # per-sample streams are keyed by prompt: chunking cannot change a draw
        params = SamplingParams(cfg.n, cfg.temperature, cfg.top_p, cfg.max_new_tokens, seed, exp.task.name)
        outs = backend.generate([question_prompt(q) for q in chunk["question"]], params)
        rows = []
        for qid, gold, gens in zip(chunk["id"], chunk["answer"], outs, strict=True):
            for j, g in enumerate(gens):
                pred, correct = grade(g.text, gold, exp.task.name)
                rows.append(
                    dict(
                        id=f"{qid}/s{j}",
                        question_id=qid,
                        idx=j,
                        text=g.text,
                        pred=pred,
                        correct=correct,
                        annotations_ok=check_annotations(g.text),
                        n_tokens=g.n_tokens,
                        checkpoint_id=ckpt_id,
                        seed=seed,
                        parent_id=qid,
                    )
                )
        df = pd.DataFrame(rows)
        stage.log(f"chunk {c + 1}/{len(chunks)}: {len(df)} samples, {df['correct'].mean():.1%} correct")
        return {"samples": df}

    load = lambda: generator.load(model_path, accelerator, exp.gen_batch_size, stage.log, exp.model.trust_remote_code)  # noqa: E731
    gen_stats, resumed = run_chunks(stage, lineage, ["samples"], chunks, load, sample_chunk)
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
        "chunks_resumed": resumed,
    }
    if gen_stats is not None:
        meta["generated_tokens_per_s"] = round(gen_stats.tokens_per_second(), 1)
    return stage.done(meta, check_results=[check])


def sampled_questions(lineage: LineageStore, experiment: str, limit: int | None) -> pd.DataFrame:
    """The training questions sampling covers: all of them, or the first ``limit`` by id."""
    return lineage.query(
        "SELECT id, question, answer FROM questions WHERE experiment = ? AND split = 'train' ORDER BY id LIMIT ?", [experiment, limit]
    )


def n_per_question_check(lineage: LineageStore, stage: Stage) -> dg.AssetCheckResult:
    """Every sampled training question holds exactly N samples."""
    c = lineage.query(
        "SELECT count(*) AS nq, coalesce(min(n), 0) AS lo, coalesce(max(n), 0) AS hi FROM "
        "(SELECT q.id, count(s.id) AS n FROM (SELECT id FROM questions WHERE experiment = ? AND split = 'train' ORDER BY id LIMIT ?) q "
        "LEFT JOIN samples s ON s.experiment = ? AND s.question_id = q.id GROUP BY q.id)",
        [stage.name, stage.exp.sampling.questions, stage.name],
    ).iloc[0]
    n = stage.exp.sampling.n
    return dg.AssetCheckResult(
        check_name="n_samples_per_question",
        passed=bool(int(c["lo"]) == int(c["hi"]) == n),
        metadata={"questions": int(c["nq"]), "min": int(c["lo"]), "max": int(c["hi"]), "n": n},
    )
