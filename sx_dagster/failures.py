"""Which failures a retry can fix, and no step outliving its run.

- :func:`step` wraps every asset body (one line per asset). Errors that can only fail again
  (a model that cannot load, a corrupt DuckDB file, bad task data, a bad experiment config) are
  re-raised as ``dg.Failure(allow_retries=False)``: Dagster's RetryPolicy retries any other
  exception, and those keep their backoff (a lost download, a locked store, an OOM-killed
  helper). The run-level counterpart is ``run_retries.retry_on_asset_or_op_failure: false`` in
  ``deploy/dagster.yaml``: a run is re-executed only when it failed for a reason other than a step.
- In a step process (the multiprocess executor starts each step with ``multiprocessing``),
  :func:`step` arms ``PR_SET_PDEATHSIG``: the kernel SIGKILLs the step the moment its run
  worker dies, so a ``kill -9`` of ``dagster asset materialize`` leaves nothing training that
  could later write a checkpoint or a lineage row. A watchdog thread covers kernels without it.
  A training stage's Pipes subprocesses (launcher and workers) get the same through
  :mod:`sx_dagster.parent`.
- A stop asked for by SIGTERM/SIGINT (:class:`sx_dagster.stopping.StopRequested`) fails the step
  without a retry: Dagster's RetryPolicy would otherwise re-run an interrupted step.
- :func:`mark_dead_runs_failed` ends the other half of that story: a run whose worker died
  stays STARTED forever in Dagster (the default run launcher cannot check a worker's health),
  so ``sx-dagster run|ui`` and the ``dead_run_reaper`` sensor mark such runs failed.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

import dagster as dg

from sx_dagster.parent import die_with
from sx_dagster.stopping import StopRequested, last_stop

F = TypeVar("F", bound=Callable)

HOST_TAG = "sx/worker_host"
PID_TAG = "sx/worker_pid"


def permanent_reason(exc: BaseException) -> str | None:
    """Why ``exc`` (or an exception it was raised from) cannot succeed on retry, else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        why = _permanent(e)
        if why:
            return why
        e = e.__cause__ or e.__context__
    return None


def _permanent(e: BaseException) -> str | None:
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(e).__mro__}
    if "sx_dagster.config.ConfigError" in names:
        return "bad experiment config"
    if "sx_dagster.core.tasks.DatasetError" in names:
        return "bad task data"
    if "sx_dagster.ml.models.ModelLoadError" in names:
        return "the model cannot be loaded"
    if "_duckdb.IOException" in names or "duckdb.IOException" in names:
        # Another writer holding the file is transient (dagster-duckdb already waited for it);
        # a truncated or foreign file fails the same way every time.
        if "Could not set lock" in str(e) or "Conflicting lock" in str(e):
            return None
        return "the DuckDB lineage store is damaged or unreadable (restore it, or move it aside to start over)"
    return None


@contextlib.contextmanager
def non_retriable_errors(where: str = "") -> Iterator[None]:
    """Re-raise permanent errors as a Failure that Dagster's retry policy does not retry."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as e:
        why = permanent_reason(e)
        if why is None:
            raise
        prefix = f"{where}: " if where else ""
        raise dg.Failure(
            description=f"{prefix}{type(e).__name__}: {e} (not retried: {why})",
            metadata={"not_retried": why, "error": type(e).__name__},
            allow_retries=False,
        ) from e


def step(fn: F) -> F:
    """Decorator for an asset body (below ``@dg.asset``): dies with its run worker, and
    errors that can only fail again are not retried. Dagster sees ``fn``'s own signature.
    A round-r copy of the asset (``round_<r>/...``, issue 26) gets the lineage store of its
    round, so the body's queries read and write that round's rows."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        context = args[0] if args else kwargs.get("context")
        if "lineage" in kwargs and context is not None:
            from sx_dagster.assets._rounds import round_of

            kwargs["lineage"] = kwargs["lineage"].for_round(round_of(context.asset_key.to_user_string()))
        die_with_parent()
        _tag_worker(context)
        where, partition = fn.__name__, None
        with contextlib.suppress(Exception):
            partition = context.partition_key
            where = f"{fn.__name__} [{partition}]"
        try:
            with non_retriable_errors(where):
                return fn(*args, **kwargs)
        except StopRequested as e:
            # Dagster's retry policy retries interrupts too: a stop the user asked for would
            # re-run the stage after the backoff and the run would go on. Fail it for good.
            raise dg.Failure(
                description=f"{where}: {e}; run the same command again to resume",
                metadata={"stopped_by": dg.MetadataValue.text(str(last_stop()))},
                allow_retries=False,
            ) from e
        except Exception as e:
            if partition is not None:
                _name_experiment(e, partition)
            raise

    return wrapper  # type: ignore[return-value]


def _name_experiment(e: Exception, partition: str) -> None:
    """Say which experiment failed in the error the run page shows (checks and runs span several)."""
    if isinstance(e, dg.Failure):
        if partition not in (e.description or ""):
            e.description = f"[{partition}] {e.description or type(e).__name__}"
        e.metadata = {**e.metadata, "experiment": dg.MetadataValue.text(partition)}
    elif partition not in str(e):
        e.add_note(f"experiment (partition): {partition}")


_armed = False


def die_with_parent() -> bool:
    """In a process started by ``multiprocessing`` (a Dagster step process), exit as soon as
    the parent (the run worker) dies. Returns whether it armed. A no-op in the main process:
    ``sx-dagster run`` runs steps in process and must not die with its shell."""
    global _armed
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return False
    if _armed:
        return True
    _armed = True
    # The process that started this one (a forkserver's child: the forkserver) and, below, the
    # run worker itself: either one's death ends the step.
    die_with(os.getppid())
    if not parent.is_alive():  # the run worker died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def _tag_worker(context) -> None:
    """Record which host and process run this run, so a dead worker can be recognised."""
    with contextlib.suppress(Exception):  # a tag is a convenience: never fail a step over it
        parent = multiprocessing.parent_process()
        pid = parent.pid if parent is not None and parent.pid else os.getpid()
        tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
        run = context.instance.get_run_by_id(context.run_id)
        if run is not None and any(run.tags.get(k) != v for k, v in tags.items()):
            context.instance.add_run_tags(context.run_id, tags)


def _worker_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The run worker's pid on this host: from our tag, else (local SQLite storage only, so the
    run was on this machine) from the executor's "pid" engine event."""
    host = run.tags.get(HOST_TAG)
    if host is not None:
        return int(run.tags[PID_TAG]) if host == socket.gethostname() and run.tags.get(PID_TAG, "").isdigit() else None
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

    if not isinstance(instance.run_storage, SqliteRunStorage):
        return None
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20).records
    for rec in records:
        data = rec.event_log_entry.dagster_event.event_specific_data if rec.event_log_entry.dagster_event else None
        pid = getattr(getattr(data, "metadata", {}).get("pid"), "value", None)
        if isinstance(pid, str) and pid.isdigit():
            return int(pid)
    return None


def _alive_since(pid: int, started_at: float | None) -> bool:
    """Whether ``pid`` is a live process that existed when the run started (not a reused pid)."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_at is None or p.create_time() <= started_at + 1.0
    except psutil.Error:
        return False


def mark_dead_runs_failed(instance: dg.DagsterInstance) -> list[str]:
    """Mark STARTED runs whose run worker on this host is gone as failed; returns their ids."""
    from dagster._core.events import JobFailureData, RunFailureReason

    failed = []
    for rec in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = rec.dagster_run
        pid = _worker_pid(instance, run)
        if pid is None or pid == os.getpid() or _alive_since(pid, rec.start_time):
            continue
        # UNEXPECTED_TERMINATION: with run retries on, a lost worker is the one failure worth re-running
        why = JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
        instance.report_run_failed(run, f"The run worker (pid {pid}) is gone: killed, or its node lost. Marked failed.", why)
        with contextlib.suppress(NotImplementedError):  # its step held a gpu pool slot: give it back
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed


@dg.sensor(
    name="dead_run_reaper",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs whose run worker process died (kill -9, lost node) as failed, instead of STARTED forever.",
)
def dead_run_reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    ids = mark_dead_runs_failed(context.instance)
    return dg.SkipReason(f"marked failed: {', '.join(ids)}" if ids else "no dead run workers")
