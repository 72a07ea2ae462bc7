"""``sx-dagster``: run the whole graph for an experiment in-process and print the eval table.

    sx-dagster run [--experiment tiny-synthetic] [--select ASSETS]
                                                   materialize everything (or ASSETS), then print the table
    sx-dagster init                                create the Dagster instance storage in $DAGSTER_HOME
                                                   (once, under a lock; run it before `dagster ...` commands)
    sx-dagster table [--experiment NAME]           print the last eval table from DuckDB
    sx-dagster estimate [--experiment NAME] [--device cpu|cuda] [--devices N]
                                                   rough memory/time per stage, before a run
    sx-dagster ui                                  open the Dagster UI on 127.0.0.1:3000

Runs are recorded in $DAGSTER_HOME (default <project>/.dagster_home), so they show in the UI.
SIGTERM or SIGINT stops a run at the next safe point (an optimizer step, a generation batch, a
chunk) within seconds; committed chunks stay, and the next run resumes from them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time

from sx_dagster.config import DEFAULT_EXPERIMENT
from sx_dagster.paths import PROJECT_ROOT, dagster_home


@contextlib.contextmanager
def _home_lock(home):
    """An exclusive lock on $DAGSTER_HOME's set-up: Dagster's SQLite storages create their tables
    and stamp their schema version on first use, and two processes doing it at once fail
    (``UNIQUE constraint failed: alembic_version.version_num``)."""
    with open(home / ".sx-init.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _instance():
    import dagster as dg

    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    with _home_lock(home):
        instance_yaml = home / "dagster.yaml"
        shipped = PROJECT_ROOT / "deploy" / "dagster.yaml"  # the GPU pool and run queue settings
        if not instance_yaml.exists() or not instance_yaml.read_text().strip():
            instance_yaml.write_text(shipped.read_text() if shipped.exists() else "")
        instance = dg.DagsterInstance.get()
        # Touch every storage now, inside the lock, so none is created concurrently later.
        instance.get_runs(limit=1)
        instance.event_log_storage.get_asset_keys()
        if instance.schedule_storage is not None:
            instance.all_instigator_state()
    from sx_dagster.failures import mark_dead_runs_failed

    # runs whose worker was killed (kill -9, a lost node) would otherwise stay STARTED forever
    for run_id in mark_dead_runs_failed(instance):
        print(f"run {run_id}: its worker process is gone; marked failed", file=sys.stderr)
    _watch_checkpoints(instance)
    return instance


def _watch_checkpoints(instance) -> None:
    """A checkpoint deleted or changed on disk: its partition shows as failed in the UI, with the
    asset to re-materialize (and its check passes again once it is back). Advisory: a lineage
    store that cannot be read here fails the stage that reads it, with its own message."""
    from sx_dagster.checkpoint_watch import watch_checkpoints
    from sx_dagster.resources import LineageStore

    try:
        lines = watch_checkpoints(instance, LineageStore())
    except Exception as e:  # never keep a run from starting over a report
        print(f"checkpoint watch skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return
    for line in lines:
        print(f"{line} (reported to Dagster)", file=sys.stderr)


def init() -> int:
    """Create (or upgrade-check) the instance storage once, so `dagster ...` commands may start together."""
    instance = _instance()
    print(f"Dagster instance ready in {instance.root_directory}")
    return 0


def _stopped_exit_code() -> int | None:
    """128 + the signal that stopped a stage of this run (the shell's convention), else None."""
    from sx_dagster.stopping import last_stop

    name = last_stop()
    if name is None:
        return None
    return 128 + (signal.Signals[name].value if name in signal.Signals.__members__ else signal.SIGTERM.value)


def run(experiment: str, select: str | None = None) -> int:
    import dagster as dg

    from sx_dagster.assets import rounds_graph
    from sx_dagster.config import get_experiment
    from sx_dagster.definitions import resources

    exp = get_experiment(experiment)  # a clear error before anything starts
    estimate(experiment)
    print(f"accelerator: {resources()['accelerator'].describe()}", flush=True)
    t0 = time.time()
    selection = [a.strip() for a in select.split(",")] if select else None
    instance = _instance()
    # rounds.count > 1: rounds 2.. of the per-round assets too, after round 1 (issue 26)
    result = dg.materialize(
        rounds_graph(exp.rounds.count),
        partition_key=experiment,
        resources=resources(),
        instance=instance,
        selection=selection,
        raise_on_error=False,
    )
    _watch_checkpoints(instance)  # a checkpoint this run wrote again passes its check in the UI now
    timings = []
    for ev in result.all_events:
        if ev.event_type_value == "STEP_SUCCESS":
            timings.append((ev.step_key, ev.event_specific_data.duration_ms / 1000))
    print(f"\nper-asset wall time ({experiment}):")
    for key, secs in timings:
        print(f"  {key:<22} {secs:7.1f} s")
    print(f"  {'total':<22} {time.time() - t0:7.1f} s")
    stopped = _stopped_exit_code()
    if stopped is not None:
        print(f"\nstopped by a signal; run the same command again to resume ({experiment})", file=sys.stderr)
        return stopped
    if not result.success:
        print(f"\nthe run of {experiment} failed; see the errors above (and the run in the UI: sx-dagster ui)", file=sys.stderr)
        return 1
    return table(experiment) if select is None else 0


def estimate(experiment: str, device: str | None = None, devices: int | None = None) -> int:
    from sx_dagster.config import get_experiment
    from sx_dagster.core.estimate import DEVICES, format_estimate

    exp = get_experiment(experiment)
    if device is None:
        from sx_dagster.device import cuda_available

        device = "cuda" if cuda_available() else "cpu"
    devices = devices or exp.distributed.num_processes
    rows, params = experiment_estimate(exp, device, devices)
    print(format_estimate(rows, params, device, devices, DEVICES[device].memory_gb))
    return 0


def experiment_estimate(exp, device: str, devices: int):
    """(per-stage estimates, parameter count) of an experiment on ``devices`` x ``device``."""
    from sx_dagster.core.estimate import estimate

    if exp.model.name == "tiny":  # sized from its config, without importing transformers' models (~2 s)
        shape = exp.model.tiny.shape()
    else:
        from sx_dagster.ml.models import model_shape

        shape = model_shape(exp)
    n_train = exp.task.n_train or {"gsm8k": 7473, "math": 7500, "synthetic": 1000}[exp.task.name]
    n_test = exp.task.n_test or {"gsm8k": 1319, "math": 500, "synthetic": 1000}[exp.task.name]
    rows = estimate(
        shape, exp.task.name, device, devices, n_train, n_test, exp.sampling.n, exp.explore.k,
        {"sft": exp.sft.epochs, "rft": exp.rft.epochs, "dpo": exp.dpo.epochs, "prm": exp.prm.epochs},
        lora=exp.lora.r > 0, qlora=exp.lora.qlora, zero=_zero(exp.distributed),
        batches={k: (getattr(exp, k).batch_size, getattr(exp, k).grad_accum) for k in ("sft", "rft", "dpo", "prm")},
        include_gold=exp.rft.include_gold, sampled_questions=min(exp.sampling.questions or n_train, n_train),
        prm_correct_per_question=exp.prm.correct_per_question, best_of_n=exp.prm.best_of_n, best_of_n_models=len(exp.prm.models),
    )  # fmt: skip
    return rows + round_estimates(rows, exp.rounds.count), shape.params


def round_estimates(rows: list, rounds: int) -> list:
    """Rounds 2..``rounds`` (issue 26): the per-round stages again, each round's eval grading 3 of
    the 5 models (few-shot and SFT are round 1's)."""
    import dataclasses

    per_round = {"sampled_rationales": 1.0, "rft_checkpoint": 1.0, "first_pit_labels": 1.0, "DPO (x2)": 1.0, "eval_scores": 3 / 5}
    return [
        dataclasses.replace(r, stage=f"round {k}: {r.stage}", tokens=r.tokens * per_round[r.stage], seconds=r.seconds * per_round[r.stage])
        for k in range(2, rounds + 1)
        for r in rows
        if r.stage in per_round
    ]


def _zero(dist) -> int:
    """The ZeRO stage a distributed section amounts to (FSDP full shard = 3)."""
    if dist.num_processes == 1:
        return 0
    return {"ddp": 0, "fsdp": 3, "deepspeed": dist.zero_stage}[dist.strategy]


def table(experiment: str) -> int:
    from sx_dagster.assets.evaluate import format_scores
    from sx_dagster.resources import LineageStore

    df = LineageStore().query("SELECT * FROM eval_scores WHERE experiment = ? ORDER BY rowid", [experiment])
    if df.empty:
        print(f"no eval scores for {experiment!r} yet: run `sx-dagster run --experiment {experiment}`", file=sys.stderr)
        return 1
    split = df["split"].iloc[0] if "split" in df and df["split"].notna().any() else "test"
    print(f"\nSelf-Explore eval: {experiment} (greedy {split} accuracy, %)\n")
    print(format_scores(df))
    bon = LineageStore().query("SELECT * FROM best_of_n_scores WHERE experiment = ? ORDER BY rowid", [experiment])
    if not bon.empty:
        from sx_dagster.assets.prm import format_best_of_n

        n = int(bon["best_of"].iloc[0])
        print(f"\nBest-of-{n} with the process reward model: {experiment} ({split} accuracy, %; one sample = the first of the {n})\n")
        print(format_best_of_n(bon))
    from sx_dagster.assets.evaluate import format_rounds, rounds_report
    from sx_dagster.config import get_experiment

    report = rounds_report(LineageStore(), experiment, get_experiment(experiment).rounds.count)
    if len(report) > 1:
        print(f"\nRounds: {experiment} (each round samples and explores with the previous round's Self-Explore model; {split} %)\n")
        print(format_rounds(report))
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def ui(port: int) -> int:
    _instance()
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    # A launcher started in the background inherits SIGINT as ignored, and so would `dagster dev`
    # (then Ctrl-C/SIGINT/SIGTERM leave the webserver, daemon and code servers running). Restore
    # the handlers here and in the child; `dagster dev` then shuts its services down itself.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sx-dagster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "table"):
        s = sub.add_parser(name)
        s.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
        if name == "run":
            s.add_argument("--select", default=None, help="comma-separated asset names (default: all)")
    sub.add_parser("init")
    s = sub.add_parser("estimate")
    s.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    s.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: this machine's")
    s.add_argument("--devices", type=int, default=None, help="default: the experiment's distributed.num_processes")
    s = sub.add_parser("ui")
    s.add_argument("--port", type=int, default=3000)
    args = p.parse_args(argv)
    if args.cmd == "run":
        return run(args.experiment, args.select)
    if args.cmd == "init":
        return init()
    if args.cmd == "table":
        return table(args.experiment)
    if args.cmd == "estimate":
        return estimate(args.experiment, args.device, args.devices)
    return ui(args.port)


if __name__ == "__main__":
    sys.exit(main())
