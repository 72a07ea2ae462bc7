"""Definitions: the Self-Explore asset graph, its jobs, schedules and resources."""

from __future__ import annotations

import os

import dagster as dg

from sx_dagster.assets import ALL_ASSETS, rounds_graph
from sx_dagster.checkpoint_watch import checkpoint_checks, checkpoint_watch
from sx_dagster.config import load_experiments
from sx_dagster.device import cuda_available
from sx_dagster.failures import dead_run_reaper
from sx_dagster.resources import AcceleratorResource, CheckpointStore, GeneratorResource, LineageStore

PARTITIONS = ALL_ASSETS[0].partitions_def
# Rounds 2..R of the per-round assets (groups round_2..), R the most any experiment runs (rounds.count)
ROUNDS = max((e.rounds.count for e in load_experiments().values()), default=1)
GRAPH = rounds_graph(ROUNDS)
ROUND_GROUPS = [f"round_{r}" for r in range(2, ROUNDS + 1)]
CHECKPOINT_CHECKS = checkpoint_checks()  # checkpoint_on_disk on each checkpoint asset

self_explore_job = dg.define_asset_job(
    "self_explore",
    # checkpoint_on_disk stays out of the pipeline run: a stage has just hashed what it wrote, and each
    # check would be one more step process (or pod). The UI can run it; the checkpoint_watch sensor reports it.
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(*ROUND_GROUPS) - dg.AssetSelection.checks(*CHECKPOINT_CHECKS),
    partitions_def=PARTITIONS,
    description="The whole Self-Explore pipeline for one experiment: SFT -> sample -> RFT -> explore -> DPO -> evaluate.",
)
rounds_job = dg.define_asset_job(
    "self_explore_rounds",
    selection=dg.AssetSelection.all() - dg.AssetSelection.checks(*CHECKPOINT_CHECKS),
    partitions_def=PARTITIONS,
    description="The pipeline and its rounds 2..: each round samples and explores with the previous round's Self-Explore "
    "model (rounds.count; experiments with fewer rounds fail at the first round beyond theirs).",
)
eval_job = dg.define_asset_job(
    "evaluate",
    selection=dg.AssetSelection.assets("eval_scores"),
    partitions_def=PARTITIONS,
    description="Re-run evaluation of all five models for one experiment.",
)


def _schedules() -> list[dg.ScheduleDefinition]:
    """One schedule per experiment with ``schedule.cron``: re-run eval, or the whole graph."""
    out = []
    for name, exp in load_experiments().items():
        if not exp.schedule.cron:
            continue
        job = eval_job if exp.schedule.target == "eval" else self_explore_job

        def _run(context: dg.ScheduleEvaluationContext, _name: str = name) -> dg.RunRequest:
            return dg.RunRequest(partition_key=_name, tags={"sx/scheduled": "true"})

        out.append(
            dg.ScheduleDefinition(
                name=f"rerun_{exp.schedule.target}_{name}".replace("-", "_").replace(".", "_"),
                cron_schedule=exp.schedule.cron,
                job=job,
                execution_fn=_run,
                description=f"Scheduled re-run ({exp.schedule.target}) of experiment {name}",
                default_status=dg.DefaultScheduleStatus.STOPPED,
            )
        )
    return out


def resources() -> dict:
    return {
        "lineage": LineageStore(),
        "checkpoints": CheckpointStore(),
        "accelerator": AcceleratorResource(),
        "generator": GeneratorResource(),
    }


EXECUTORS = ("auto", "multiprocess", "in_process", "k8s")


def _has_cuda() -> bool:
    """Whether torch sees a CUDA device (the executor choice; the step processes are spawned, so
    a CUDA context made here is never inherited). With a CPU-only torch, torch is not imported."""
    return cuda_available()


def executor_kind() -> str:
    """``SX_EXECUTOR``: auto (default) = multiprocess where CUDA is, else in_process."""
    kind = os.environ.get("SX_EXECUTOR", "auto").strip() or "auto"
    if kind not in EXECUTORS:
        raise ValueError(f"SX_EXECUTOR={kind!r}: use one of {', '.join(EXECUTORS)}")
    if kind == "auto":
        return "multiprocess" if _has_cuda() else "in_process"
    return kind


def executor() -> dg.ExecutorDefinition:
    """One step at a time. ``multiprocess``: each step in its own process, so a stage's GPU
    memory is freed before the next. ``in_process``: all steps in the run worker, which saves a
    Python start and the torch/transformers/TRL imports per step where there is no accelerator
    memory to free (the default on a CPU-only machine). ``k8s``: each step in its own Kubernetes
    pod (dagster-k8s), where the steps' ``dagster-k8s/config`` tags request their GPUs."""
    kind = executor_kind()
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured({"max_concurrent": 1})
    if kind == "in_process":
        return dg.in_process_executor
    return dg.multiprocess_executor.configured({"max_concurrent": 1})


defs = dg.Definitions(
    assets=GRAPH,
    asset_checks=CHECKPOINT_CHECKS,
    jobs=[self_explore_job, eval_job, *([rounds_job] if ROUNDS > 1 else [])],
    schedules=_schedules(),
    # with the daemon on: runs whose worker died are marked failed; a deleted checkpoint fails its partition
    sensors=[dead_run_reaper, checkpoint_watch],
    resources=resources(),
    executor=executor(),
)
