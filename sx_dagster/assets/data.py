"""task_dataset: the train, dev and test questions with gold answers."""

from collections import Counter

import dagster as dg
import pandas as pd

from sx_dagster.assets._stage import Stage, code_version, experiment_partitions
from sx_dagster.core.steps import split_steps
from sx_dagster.core.tasks import DatasetError, TaskExample, carve_dev, load_jsonl, synthetic_split
from sx_dagster.failures import step
from sx_dagster.resources import LineageStore

CODE = code_version("data")


def load_split(task, split: str) -> list[TaskExample]:
    """One split's examples; "train" of a real task holds the dev rows too (see :func:`load_task`)."""
    limit = task.n_train if split == "train" else task.n_test
    if task.name == "synthetic":
        return synthetic_split(task.n_dev if split == "dev" else limit, task.seed, split, task.synthetic)
    if split == "train" and limit is not None:
        limit += task.n_dev
    path = task.train_path if split == "train" else task.test_path
    if path:
        return load_jsonl(path, task.name, split, limit)
    hub = (task.hub_test_dataset or task.hub_dataset) if split == "test" else task.hub_dataset
    if not hub:
        raise DatasetError(f"task {task.name!r}: set {split}_path or hub_dataset")
    from sx_dagster.ml.data import load_hub

    return load_hub(hub, task.name, split, limit)


def load_task(task) -> tuple[list[TaskExample], list[TaskExample], list[TaskExample]]:
    """(train, dev, test). Dev is held out of the training data: the synthetic task draws it
    from its own stream; a real task carves the last ``n_dev`` rows off its training rows."""
    train, test = load_split(task, "train"), load_split(task, "test")
    if task.name == "synthetic":
        dev = load_split(task, "dev") if task.n_dev else []
    else:
        train, dev = carve_dev(train, task.n_dev, f"task {task.name!r}")
    return train, dev, test


@dg.asset(
    partitions_def=experiment_partitions(),
    group_name="sft_and_rft",
    kinds={"duckdb", "python"},
    code_version=CODE,
    description="Train, dev and test questions with gold rationales and answers (synthetic, GSM8K or MATH).",
)
@step
def task_dataset(context: dg.AssetExecutionContext, lineage: LineageStore) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "task_dataset", CODE, reads=("task",), task_files=True)
    if (skip := stage.unchanged()) is not None:
        return skip
    try:
        train, dev, test = load_task(stage.exp.task)
        if not train or not test:
            raise DatasetError(f"task {stage.exp.task.name!r}: no {'train' if not train else 'test'} examples")
    except DatasetError as e:
        raise dg.Failure(f"[{stage.name}] {e}", allow_retries=False) from None
    df = pd.DataFrame([e.__dict__ for e in train + dev + test])
    df["experiment"], df["run_id"], df["parent_id"] = stage.name, stage.run_id, None
    stage.replace({"questions": df})
    steps = Counter(len(split_steps(e.rationale or "", stage.exp.task.name)) for e in train)
    stage.log(f"{len(train)} train, {len(dev)} dev and {len(test)} test questions written")
    return stage.done(
        {
            "n_train": len(train),
            "n_dev": len(dev),
            "n_test": len(test),
            "task": stage.exp.task.name,
            "steps_per_gold_rationale": dg.MetadataValue.json(dict(sorted(steps.items()))),
            "example": dg.MetadataValue.md(f"**Q:** {train[0].question}\n\n```\n{train[0].rationale}\n```"),
        }
    )
