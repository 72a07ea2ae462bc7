"""What every stage does around its paper step: find its experiment, fingerprint its inputs,
skip when nothing changed, and record a lineage row and Dagster metadata when done.

A stage's row replacements (:meth:`Stage.replace`, :meth:`Stage.record_checkpoint`) are
held until :meth:`Stage.done` and written with its lineage row in one transaction: a re-run
that fails leaves the old rows and the old lineage, and either config re-runs cleanly."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import line_plot
from sx_dagster.assets._rounds import ROUND_READS, input_names, resolved_input, round_key, round_of
from sx_dagster.config import ConfigError, ExperimentConfig, get_experiment, load_experiments
from sx_dagster.resources import CheckpointStore, LineageStore
from sx_dagster.resources.checkpoints import MISSING, checkpoint_hash, checkpoint_problem, file_digest
from sx_dagster.resources.lineage import DONE

_PKG = Path(__file__).resolve().parents[1]


# Modules whose bytes make a stage's code version: the method, the stage code and the named
# queries a stage reads its rows through. Other sx_dagster modules (resources) are followed for
# their imports but not hashed.
_HASHED = ("sx_dagster.core", "sx_dagster.ml", "sx_dagster.assets", "sx_dagster.resources.queries", "sx_dagster.resources.pit_queries")
# Not followed: the config's values are fingerprinted as values (Stage ``reads``), and the
# lineage store only moves rows; what they import from core/ are defaults and row types.
_NOT_FOLLOWED = ("sx_dagster.config", "sx_dagster.resources.lineage")


def code_version(*modules: str, changed: Mapping[str, bytes] | None = None) -> str:
    """Hash of the source of every core/, ml/ and assets/ module the given asset modules
    import, transitively (imports inside functions included): a change to any of them makes
    the stage's fingerprint, and Dagster's code version of its assets, change; a change to a
    module it never imports does not. ``changed`` (module -> bytes) stands in for files, to
    ask what a version would be after an edit."""
    changed = changed or {}
    h = hashlib.sha256()
    for m in sorted(imported_modules(*(f"sx_dagster.assets.{m}" for m in modules))):
        if m.startswith(_HASHED):
            h.update(m.encode())
            h.update(changed[m] if m in changed else _source(m).read_bytes())  # type: ignore[union-attr]
    return h.hexdigest()[:12]


def imported_modules(*roots: str) -> set[str]:
    """The sx_dagster modules the ``roots`` import, transitively, themselves included."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen or _source(m) is None:
            continue
        seen.add(m)
        if m not in _NOT_FOLLOWED:
            todo += _imports_of(m)
    return seen


def _source(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "sx_dagster":
        return None
    base = _PKG.joinpath(*parts[1:])
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports_of(module: str) -> list[str]:
    src = _source(module)
    assert src is not None
    package = module if src.name == "__init__.py" else module.rpartition(".")[0]
    out: list[str] = []
    for node in _import_statements(src.read_bytes()):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out += [_provider(base, a.name) for a in node.names]
    return [m for m in out if m.startswith("sx_dagster")]


@functools.cache
def _import_statements(source: bytes) -> tuple[ast.Import | ast.ImportFrom, ...]:
    """The import statements of a module's source, anywhere in it. Keyed by the bytes: each
    module is parsed once per process however many stages import it (every Dagster process
    hashes all stages' imports at start), and again after an edit."""
    return tuple(n for n in ast.walk(_parsed(source)) if isinstance(n, (ast.Import, ast.ImportFrom)))


@functools.cache
def _parsed(source: bytes) -> ast.Module:
    return ast.parse(source)


def _provider(module: str, name: str) -> str:
    """The module that defines ``name`` imported from ``module``: a submodule, or for a
    package that re-exports it (``from sx_dagster.resources import LineageStore``), the
    module it is re-exported from; so an asset depends on what it uses, not the whole package."""
    if _source(f"{module}.{name}") is not None:
        return f"{module}.{name}"
    src = _source(module)
    if src is not None and src.name == "__init__.py":
        for node in _parsed(src.read_bytes()).body:
            if isinstance(node, ast.ImportFrom) and node.module and any((a.asname or a.name) == name for a in node.names):
                return _provider(node.module, name)
    return module


def gpu_step() -> dict:
    """Asset arguments for a step that holds the accelerator.

    - the ``gpu`` concurrency pool: its limit (shipped ``deploy/dagster.yaml``: 1) caps how
      many such steps run at once across all runs of a backfill;
    - retries with exponential backoff for transient failures (a preempted node, a flaky
      download, a locked store). Errors that would fail again (a model that cannot load, a
      damaged DuckDB file, bad data, bad config) are not retried: every asset body is wrapped
      in ``sx_dagster.failures.step``, which raises them as ``Failure(allow_retries=False)``.
      ``SX_STEP_RETRIES`` sets the count (default 2), ``SX_STEP_RETRY_DELAY`` the first delay
      in seconds (default 30);
    - a ``dagster-k8s/config`` tag requesting ``SX_K8S_GPUS`` GPUs (default 1) for the step's
      pod under ``k8s_job_executor``.
    """
    gpus = os.environ.get("SX_K8S_GPUS", "1")
    retries = int(os.environ.get("SX_STEP_RETRIES", "2"))
    delay = float(os.environ.get("SX_STEP_RETRY_DELAY", "30"))
    k8s = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}}}
    return dict(
        pool="gpu",
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=delay, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
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
        reads: tuple[str, ...] = (),
        task_files: bool = False,
    ) -> None:
        """``reads``: the config fields the stage reads, as dotted paths into the experiment
        (``"dpo"``, ``"dpo.max_length"``); only they are fingerprinted, so a change to any
        other field leaves the stage as it is. Its upstream assets are the asset's Dagster
        ``deps``, declared once on the asset. ``task_files``: the stage reads the task's local
        JSONL files; they are fingerprinted by their bytes, so an edit in place re-runs it
        (and, through it, what depends on it)."""
        self.round = round_of(context.asset_key.to_user_string())
        # ``asset`` is the round-1 name; round r >= 2 keys its lineage, chunks and checkpoints round_<r>/<asset>
        self.context, self.lineage, self.asset = context, lineage.for_round(self.round), round_key(asset, self.round)
        lineage = self.lineage
        try:
            self.exp: ExperimentConfig = get_experiment(context.partition_key)
        except ConfigError as e:
            raise dg.Failure(str(e), allow_retries=False) from None
        self.name = self.exp.name
        if self.round > self.exp.rounds.count:
            raise dg.Failure(
                f"{self.asset}: experiment {self.name!r} runs {self.exp.rounds.count} round(s) (rounds.count); "
                f"round {self.round} is beyond it: raise rounds.count, or leave the round_{self.round} assets out",
                allow_retries=False,
            )
        self.run_id = context.run_id
        # Inputs by their round-1 names (so round 1's fingerprints are what they were); in round
        # r >= 2 each is read from the key the round resolves it to (sx_dagster.assets._rounds).
        self.inputs: dict[str, dict] = {}
        self.input_keys: dict[str, str] = {}
        for up in input_names(asset, upstream_assets(context), self.round):
            key = resolved_input(asset, up, self.round, self.exp.rounds.train_from)
            row = lineage.latest_lineage(self.name, key)
            if row is None:
                raise dg.Failure(
                    f"{self.asset}: upstream asset {key!r} has not been materialized for experiment {self.name!r}", allow_retries=False
                )
            if not _finished(row):
                raise dg.Failure(
                    f"{self.asset}: the last run of upstream asset {key!r} ({row['run_id']}) did not finish for experiment "
                    f"{self.name!r}: re-materialize {key}",
                    allow_retries=False,
                )
            self.inputs[up], self.input_keys[up] = row, key
        if self.round > 1:
            reads = (*reads, *ROUND_READS.get(asset, ()))  # DPO's start and pairs; round 1 never reads rounds.*
        self.config = self.exp.section_dump(*reads)
        self.code = code
        self._writes: list[tuple[dict[str, pd.DataFrame], str, list]] = []
        payload = {
            "code": code,
            "config": self.config,
            # an upstream checkpoint by its bytes too: a retrained model with other weights re-runs what uses it
            "inputs": {k: [v["fingerprint"], v.get("checkpoint_hash")] for k, v in self.inputs.items()},
            "files": {f: file_digest(f) for f in self._task_files()} if task_files else {},
        }
        self.fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        _gpu_memory(reset=True)  # this stage's peak, not the previous in-process stage's

    def _task_files(self) -> list[str]:
        # a missing file is left to the loader, which names it
        paths = {self.exp.task.train_path, self.exp.task.test_path}
        return sorted(p for p in paths if p and Path(p).is_file())

    def log(self, msg: str) -> None:
        self.context.log.info(f"[{self.name}] {msg}")

    def input_checkpoint(self, up: str) -> tuple[str, str]:
        """(path or model id, checkpoint id) of an upstream model asset. A local checkpoint
        (one with a hash) that is gone from disk fails at once, naming the asset to re-run."""
        row, key = self.inputs[up], self.input_keys[up]
        path, digest = row["checkpoint_path"], row.get("checkpoint_hash")
        if isinstance(digest, str) and not Path(path).exists():
            raise dg.Failure(
                f"[{self.name}] {self.asset}: checkpoint missing: {path} (written by {key}, run {row['run_id']}); "
                f"re-materialize {key} for experiment {self.name!r}",
                allow_retries=False,
            )
        return path, checkpoint_id(self.name, key, digest)

    def replace(self, writes: dict[str, pd.DataFrame], where: str = "", params: Sequence = ()) -> None:
        """Replace the experiment's rows of each table (those matching the SQL ``where`` with bound
        ``params``) when the stage is done, in the transaction of its lineage row; until then the old rows stay."""
        self._writes.append((writes, where, list(params)))

    def write_checkpoint(
        self, checkpoints: CheckpointStore, name: str, write: Callable[[Path], object], parent: str | None
    ) -> tuple[str, str, object]:
        """``write(tmp_dir)`` into a temporary directory that becomes the checkpoint when it
        returns; hashed and recorded. Returns (path, hash, what ``write`` returned). In round
        r >= 2 the checkpoint is ``round_<r>/<name>``."""
        name = round_key(name, self.round)
        with checkpoints.writing(self.name, name) as tmp:
            out = write(tmp)
        path = checkpoints.path(self.name, name)
        digest = checkpoint_hash(path)
        self.record_checkpoint(name, str(path), digest, parent)
        return str(path), digest, out

    def record_checkpoint(self, name: str, path: str, digest: str | None, parent: str | None) -> None:
        """One row per model checkpoint (path and hash), replaced when the stage is done."""
        row = dict(
            experiment=self.name,
            id=checkpoint_id(self.name, name, digest),
            name=name,
            path=path,
            hash=digest,
            parent_id=parent,
            run_id=self.run_id,
            round=self.round,
        )
        self.replace({"checkpoints": pd.DataFrame([row])}, "AND name = ?", [name])

    def unchanged(self, checkpoints: CheckpointStore | None = None, checks=None) -> dg.MaterializeResult | None:
        """The previous result when code, config and inputs are identical and the last run
        finished: the cheap re-run. A local checkpoint of the asset must still be on disk with
        the bytes it was recorded with, else the stage runs again.

        ``checks`` re-evaluates the asset's checks on the stored rows (Dagster needs them).
        ``checkpoints`` is accepted for the callers; the lineage row names the checkpoint."""
        prev = self.lineage.latest_lineage(self.name, self.asset)
        if prev is None or prev["fingerprint"] != self.fingerprint:
            return None
        if not _finished(prev):
            self.log(f"last run {prev['run_id']} did not finish (status {prev['status']}): running")
            return None
        path, digest = prev.get("checkpoint_path"), prev.get("checkpoint_hash")
        if isinstance(digest, str) and (problem := checkpoint_problem(path, digest)) is not None:
            what = "missing" if problem == MISSING else f"changed on disk since run {prev['run_id']}"
            self.log(f"checkpoint {path} {what}: running again")
            return None
        meta = json.loads(prev["metadata"] or "{}")
        self.log(f"unchanged since run {prev['run_id']} (fingerprint {self.fingerprint}): skipped")
        return dg.MaterializeResult(
            metadata={**_plain(meta), "skipped_unchanged": True, "fingerprint": self.fingerprint},
            data_version=dg.DataVersion(self.fingerprint),
            check_results=name_experiment(checks(), self.name) if checks is not None else None,
        )

    def done(
        self,
        metadata: dict,
        checkpoint_path: str | None = None,
        checkpoint_hash: str | None = None,
        check_results: list[dg.AssetCheckResult] | None = None,
    ) -> dg.MaterializeResult:
        if (peak := _gpu_memory()) is not None:
            metadata = {**metadata, "peak_gpu_memory_gib": peak}
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
            writes=self._writes,
        )
        meta = {**metadata, "fingerprint": self.fingerprint, "skipped_unchanged": False}
        if checkpoint_path:
            meta["checkpoint_path"] = dg.MetadataValue.path(checkpoint_path)
        checks = name_experiment(check_results or [], self.name) or None
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(self.fingerprint), check_results=checks)


def _gpu_memory(reset: bool = False) -> float | None:
    """The peak CUDA memory (GiB) allocated since the last reset, where this process has used
    CUDA (never initialises it: a CPU stage, or one before any model loaded, reports None)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def name_experiment(results: list[dg.AssetCheckResult], experiment: str) -> list[dg.AssetCheckResult]:
    """Name the experiment in every check result: Dagster shows checks per asset, not per
    partition, so the Checks tab would otherwise not say which experiment passed or failed."""
    out = []
    for r in results:
        values = {k: getattr(v, "value", v) for k, v in r.metadata.items()}
        shown = ", ".join(f"{k}={v}" for k, v in values.items() if isinstance(v, (int, float, str, bool)))
        verdict = "passed" if r.passed else "FAILED"
        out.append(
            dg.AssetCheckResult(
                check_name=r.check_name,
                asset_key=r.asset_key,
                passed=r.passed,
                severity=r.severity,
                description=f"[{experiment}] {r.description or r.check_name} {verdict}" + (f" ({shown})" if shown else ""),
                metadata={**r.metadata, "experiment": experiment},
            )
        )
    return out


_TRAINER_EXTRAS = {
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "truncated_rows": "truncated_rows",
    "world_size": "training_processes",
    "global_batch": "global_batch",
    "warmup_steps": "warmup_steps",
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


def upstream_assets(context: dg.AssetExecutionContext) -> list[str]:
    """The assets this asset reads, as its Dagster ``deps`` name them."""
    return sorted(k.to_user_string() for k in context.assets_def.asset_deps[context.asset_key])


def checkpoint_id(experiment: str, name: str, digest: str | None) -> str:
    return f"{experiment}/{name}@{(digest or 'hub')[:12]}"


def _finished(row: dict) -> bool:
    """The lineage row is of a stage that finished (NULL status: rows of older versions)."""
    return not isinstance(row.get("status"), str) or row["status"] == DONE


def _plain(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if v is not None}
