"""Hub datasets, used when an experiment names no local JSONL path."""

from __future__ import annotations

from sx_dagster.core.tasks import DatasetError, TaskExample, examples_from_rows


def load_hub(dataset: str, task: str, split: str, limit: int | None = None) -> list[TaskExample]:
    """``dataset`` is ``id`` or ``id:config`` (e.g. ``openai/gsm8k:main``)."""
    from datasets import load_dataset

    name, _, config = dataset.partition(":")
    if task == "gsm8k" and not config and name == "openai/gsm8k":
        config = "main"
    try:
        ds = load_dataset(name, config or None, split=split)
    except Exception as e:  # noqa: BLE001 - offline, unknown id, missing split
        raise DatasetError(
            f"cannot load Hub dataset {dataset!r} split {split!r} ({type(e).__name__}: {e}); "
            "set task.train_path / task.test_path to local JSONL files to run offline"
        ) from e
    rows = ((f"hub:{dataset}:{split}:{i}", dict(r)) for i, r in enumerate(ds))
    return examples_from_rows(rows, task, split, limit)
