"""What every stage does around its paper step: find its experiment, fingerprint its inputs,
skip when nothing changed, and record a lineage row and Dagster metadata when done."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import line_plot
from sx_dagster.config import ConfigError, ExperimentConfig, get_experiment, load_experiments
from sx_dagster.resources import CheckpointStore, LineageStore
from sx_dagster.resources.checkpoints import checkpoint_hash

_PKG = Path(__file__).resolve().parents[1]


def code_version(*modules: str) -> str:
    """Hash of the method (core/, ml/) and the given asset modules: a change to any of them
    makes the stage's fingerprint, and Dagster's code version, change."""
    h = hashlib.sha256()
    files = sorted((_PKG / "core").glob("*.py")) + sorted((_PKG / "ml").glob("*.py"))
    files += [_PKG / "assets" / f"{m}.py" for m in modules] + sorted((_PKG / "assets").glob("_*.py"))
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def gpu_step() -> dict:
    """Asset arguments for a step that holds the accelerator.

    - the ``gpu`` concurrency pool: its limit (shipped ``deploy/dagster.yaml``: 1) caps how
      many such steps run at once across all runs of a backfill;
    - retries with exponential backoff for transient failures (a preempted node, a flaky
      download); errors that would fail again (bad config, bad data) are raised as
      non-retriable failures. ``SX_STEP_RETRIES`` sets the count (default 2);
    - a ``dagster-k8s/config`` tag requesting ``SX_K8S_GPUS`` GPUs (default 1) for the step's
      pod under ``k8s_job_executor``.
    """
    gpus = os.environ.get("SX_K8S_GPUS", "1")
    retries = int(os.environ.get("SX_STEP_RETRIES", "2"))
    k8s = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}}}
    return dict(
        pool="gpu",
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
        op_tags={"dagster-k8s/config": k8s},
    )


def experiment_partitions() -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(load_experiments()))


class Stage:
    """One materialization of one asset for one experiment partition."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        lineage: LineageStore,
        asset: str,
        code: str,
        sections: tuple[str, ...] = (),
        upstream: tuple[str, ...] = (),
    ) -> None:
        self.context, self.lineage, self.asset = context, lineage, asset
        try:
            self.exp: ExperimentConfig = get_experiment(context.partition_key)
        except ConfigError as e:
            raise dg.Failure(str(e), allow_retries=False) from None
        self.name = self.exp.name
        self.run_id = context.run_id
        self.inputs: dict[str, dict] = {}
        for up in upstream:
            row = lineage.latest_lineage(self.name, up)
            if row is None:
                raise dg.Failure(
                    f"{asset}: upstream asset {up!r} has not been materialized for experiment {self.name!r}", allow_retries=False
                )
            self.inputs[up] = row
        self.config = self.exp.section_dump(*sections)
        self.code = code
        payload = {
            "code": code,
            "config": self.config,
            "inputs": {k: v["fingerprint"] for k, v in self.inputs.items()},
        }
        self.fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def log(self, msg: str) -> None:
        self.context.log.info(f"[{self.name}] {msg}")

    def input_checkpoint(self, up: str) -> tuple[str, str]:
        """(path or model id, checkpoint id) of an upstream model asset."""
        row = self.inputs[up]
        return row["checkpoint_path"], checkpoint_id(self.name, up, row["checkpoint_hash"])

    def write_checkpoint(
        self, checkpoints: CheckpointStore, name: str, write: Callable[[Path], object], parent: str | None
    ) -> tuple[str, str, object]:
        """``write(tmp_dir)`` into a temporary directory that becomes the checkpoint when it
        returns; hashed and recorded. Returns (path, hash, what ``write`` returned)."""
        with checkpoints.writing(self.name, name) as tmp:
            out = write(tmp)
        path = checkpoints.path(self.name, name)
        digest = checkpoint_hash(path)
        self.record_checkpoint(name, str(path), digest, parent)
        return str(path), digest, out

    def record_checkpoint(self, name: str, path: str, digest: str | None, parent: str | None) -> None:
        """One row per model checkpoint (path and hash), replaced when the asset is re-run."""
        row = dict(
            experiment=self.name,
            id=checkpoint_id(self.name, name, digest),
            name=name,
            path=path,
            hash=digest,
            parent_id=parent,
            run_id=self.run_id,
        )
        self.lineage.replace_partition(self.name, {"checkpoints": pd.DataFrame([row])}, "AND name = ?", [name])

    def unchanged(self, checkpoints: CheckpointStore | None = None, checks=None) -> dg.MaterializeResult | None:
        """The previous result when code, config and inputs are identical: the cheap re-run.

        ``checks`` re-evaluates the asset's checks on the stored rows (Dagster needs them)."""
        prev = self.lineage.latest_lineage(self.name, self.asset)
        if prev is None or prev["fingerprint"] != self.fingerprint:
            return None
        path = prev.get("checkpoint_path")
        if checkpoints is not None and path and Path(path).is_absolute() and not Path(path).exists():
            return None
        meta = json.loads(prev["metadata"] or "{}")
        self.log(f"unchanged since run {prev['run_id']} (fingerprint {self.fingerprint}): skipped")
        return dg.MaterializeResult(
            metadata={**_plain(meta), "skipped_unchanged": True, "fingerprint": self.fingerprint},
            data_version=dg.DataVersion(self.fingerprint),
            check_results=checks() if checks is not None else None,
        )

    def done(
        self,
        metadata: dict,
        checkpoint_path: str | None = None,
        checkpoint_hash: str | None = None,
        check_results: list[dg.AssetCheckResult] | None = None,
    ) -> dg.MaterializeResult:
        plain = {k: v for k, v in metadata.items() if isinstance(v, (int, float, str, bool)) or v is None}
        self.lineage.record_lineage(
            self.name,
            self.asset,
            {
                "run_id": self.run_id,
                "code_version": self.code,
                "fingerprint": self.fingerprint,
                "config": self.config,
                "input_versions": {k: {"fingerprint": v["fingerprint"], "run_id": v["run_id"]} for k, v in self.inputs.items()},
                "checkpoint_path": checkpoint_path,
                "checkpoint_hash": checkpoint_hash,
                "metadata": plain,
            },
        )
        meta = {**metadata, "fingerprint": self.fingerprint, "skipped_unchanged": False}
        if checkpoint_path:
            meta["checkpoint_path"] = dg.MetadataValue.path(checkpoint_path)
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(self.fingerprint), check_results=check_results or None)


_TRAINER_EXTRAS = {
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "truncated_rows": "truncated_rows",
    "world_size": "training_processes",
}


def train_metadata(result, title: str) -> dict:
    """What a trainer looks at: steps, final loss, time, the loss curve (and DPO rewards)."""
    steps, losses = zip(*result.losses, strict=True) if result.losses else ((), ())
    meta = {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "train_seconds": round(result.seconds, 1),
        "device": result.device,
        "dtype": result.dtype,
        "loss_curve": line_plot(steps, losses, title, "step", "loss") if losses else None,
    }
    meta.update({label: result.extra[key] for key, label in _TRAINER_EXTRAS.items() if key in result.extra})
    return meta


def checkpoint_id(experiment: str, name: str, digest: str | None) -> str:
    return f"{experiment}/{name}@{(digest or 'hub')[:12]}"


def _plain(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if v is not None}
