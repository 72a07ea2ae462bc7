"""Never retry what will fail again, and no orphan keeps writing (issues 13 and 15).

Real Dagster processes throughout: ``dagster asset materialize`` and the multiprocess executor,
a run launched through a code server, the run-retry daemon's own consume function."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import psutil
import pytest
from test_pipeline import _resources

from sx_dagster.assets import ALL_ASSETS
from sx_dagster.config import ConfigError
from sx_dagster.core.tasks import DatasetError
from sx_dagster.failures import mark_dead_runs_failed, permanent_reason
from sx_dagster.parent import ANCESTORS_ENV
from sx_dagster.resources import LineageStore

ROOT = Path(__file__).resolve().parents[1]
TINY = "{hidden_size: 64, num_layers: 1, num_heads: 2, intermediate_size: 128, vocab_size: 300}"


def _experiments(tmp: Path, body: str) -> Path:
    p = tmp / "experiments.yaml"
    p.write_text("experiments:\n" + textwrap.indent(textwrap.dedent(body), "  "))
    return p


def _env(tmp: Path, experiments: Path, **extra: str) -> dict:
    env = {**os.environ, "SX_DATA_DIR": str(tmp), "SX_EXPERIMENTS_FILE": str(experiments), "DAGSTER_HOME": str(tmp / "home")}
    env["SX_EXECUTOR"] = "multiprocess"  # these tests watch step processes (CPU-only auto is in_process)
    (tmp / "home").mkdir(exist_ok=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", tmp / "home" / "dagster.yaml")  # the shipped instance settings
    return {**env, **extra}


def test_permanent_errors_are_told_from_transient_ones(tmp_path):
    from sx_dagster.ml.models import ModelLoadError

    db = tmp_path / "sx.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t AS SELECT range AS i FROM range(100000)")
    con.close()
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])  # truncated, as after a full disk
    with pytest.raises(duckdb.IOException) as corrupt:
        duckdb.connect(str(db))
    assert "damaged" in permanent_reason(corrupt.value)
    assert permanent_reason(ModelLoadError("cannot load model 'x'")) == "the model cannot be loaded"
    assert permanent_reason(ConfigError("bad")) == "bad experiment config"
    assert permanent_reason(DatasetError("f.jsonl:3: bad")) == "bad task data"
    try:  # wrapped by whoever reported it: the cause decides
        try:
            raise DatasetError("f.jsonl:3: bad")
        except DatasetError as e:
            raise RuntimeError("task_dataset failed") from e
    except RuntimeError as wrapped:
        assert permanent_reason(wrapped) == "bad task data"
    assert permanent_reason(duckdb.IOException('IO Error: Could not set lock on file "x": Conflicting lock is held')) is None
    assert permanent_reason(OSError("Connection reset by peer")) is None
    assert permanent_reason(RuntimeError("CUDA error: an illegal memory access")) is None


_RETRY_SCRIPT = """
import sys, time, dagster as dg
from sx_dagster.assets import ALL_ASSETS
from sx_dagster.definitions import resources
import sx_dagster.ml.training as training

if sys.argv[2] == "flaky":  # a transient error: the first training attempt loses its download
    real, calls = training.train, []
    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("Connection reset by peer (simulated flaky download)")
        return real(*a, **k)
    training.train = flaky
t = time.perf_counter()
r = dg.materialize(ALL_ASSETS, partition_key=sys.argv[1], resources=resources(),
                   selection=["task_dataset", "base_model", "sft_checkpoint"], raise_on_error=False)
ev = r.all_events
print("RETRIES", sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in ev))
print("FAILURES", sum(e.event_type_value == "STEP_FAILURE" for e in ev))
print("SUCCESS", r.success, "SECONDS", round(time.perf_counter() - t, 1))
for e in ev:
    if e.event_type_value == "STEP_FAILURE":
        print("ERROR", e.event_specific_data.error.message.strip().splitlines()[0])
"""


def _materialize_with_retries(tmp: Path, partition: str, mode: str) -> dict:
    experiments = _experiments(
        tmp,
        f"""
        broken:  # a local model whose weights are damaged: the tokenizer loads, the model never will
          model: {{name: {tmp / "broken-model"}}}
          task: {{name: synthetic, n_train: 16, n_test: 4, seed: 5}}
          sft: {{epochs: 1, batch_size: 8, max_length: 128}}
        flaky:
          model: {{name: tiny, tiny: {TINY}}}
          task: {{name: synthetic, n_train: 16, n_test: 4, seed: 5}}
          sft: {{epochs: 1, batch_size: 8, max_length: 128}}
        """,
    )
    env = _env(tmp, experiments, SX_STEP_RETRIES="2", SX_STEP_RETRY_DELAY="1")
    proc = subprocess.run(
        [sys.executable, "-c", _RETRY_SCRIPT, partition, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.split(" ", 1)[0].isupper())
    return out


def test_model_that_cannot_load_fails_once_and_is_not_retried(tmp_path):
    from sx_dagster.config import TinyModelConfig
    from sx_dagster.ml.tiny import build_tiny_model, save_tiny, train_tokenizer

    tok = train_tokenizer(["1 + 2 = 3", "Start with 4. Add 5: 4 + 5 = 9."], 300)
    broken = tmp_path / "broken-model"
    save_tiny(build_tiny_model(TinyModelConfig(vocab_size=300), tok, 0), tok, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = _materialize_with_retries(tmp_path, "broken", "plain")
    assert out["RETRIES"] == "0"  # SX_STEP_RETRIES=2, but a model that cannot load fails the same way again
    assert out["FAILURES"] == "1" and out["SUCCESS"].startswith("False")
    assert "cannot load model" in out["ERROR"] and "not retried: the model cannot be loaded" in out["ERROR"]


def test_transient_error_is_still_retried_with_backoff(tmp_path):
    out = _materialize_with_retries(tmp_path, "flaky", "flaky")
    assert out["RETRIES"] == "1" and out["FAILURES"] == "0"
    assert out["SUCCESS"].startswith("True")


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # gone, or a zombie: a short-lived step process of the run
        return ""


# The killed runs' experiment: its own config in the test's experiments file, under a name of
# tests/experiments_micro.yaml so that this process's graph (partitions read at import) takes it.
KILLED = "micro-b"


def _materialize_sft(env: dict, log: Path, monkeypatch: pytest.MonkeyPatch) -> subprocess.Popen:
    """``dagster asset materialize`` of ``KILLED``'s SFT, output to ``log``. Its task and base
    model are made here first, in process: the run under test starts no step process for them."""
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", env["SX_EXPERIMENTS_FILE"])
    tmp = Path(env["SX_DATA_DIR"])
    assert dg.materialize(ALL_ASSETS, partition_key=KILLED, resources=_resources(tmp), selection=["task_dataset", "base_model"]).success
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "sx_dagster.definitions"]
    cmd += ["--select", "sft_checkpoint", "--partition", KILLED]
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _kill_and_time(parent: subprocess.Popen, procs: list[psutil.Process]) -> float:
    """``kill -9`` the run; seconds until none of ``procs`` runs (30 at most)."""
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    t0 = time.perf_counter()
    while any(map(_running, procs)) and time.perf_counter() - t0 < 30:
        time.sleep(0.05)
    return time.perf_counter() - t0


def test_step_process_dies_with_its_killed_parent_and_the_run_is_marked_failed(tmp_path, monkeypatch):
    experiments = _experiments(
        tmp_path,
        f"""
        {KILLED}:  # SFT long enough to be killed in the middle of it
          model: {{name: tiny, tiny: {TINY}}}
          task: {{name: synthetic, n_train: 96, n_test: 4, seed: 5}}
          sft: {{epochs: 200, batch_size: 8, max_length: 128}}
        """,
    )
    env = _env(tmp_path, experiments)
    log = tmp_path / "materialize.log"
    parent = _materialize_sft(env, log, monkeypatch)
    try:
        deadline = time.time() + 400
        while "sft training:" not in log.read_text() or "fine-tuning" not in log.read_text():
            assert parent.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the sft step never started"
            time.sleep(0.5)
        time.sleep(3)  # well inside the optimizer loop
        steps = _descendants(parent.pid)
        assert steps, "no step process under the run worker"
        orphan_seconds = _kill_and_time(parent, steps)
    finally:
        if parent.poll() is None:
            parent.kill()
    left = [p.pid for p in steps if _running(p)]
    for p in left:  # only our own orphans, by pid, so a failing run does not leave them behind
        os.kill(p, signal.SIGKILL)
    print(f"orphan step processes gone {orphan_seconds:.2f} s after kill -9 of the parent")
    assert not left and orphan_seconds < 5
    time.sleep(1)  # every process of the run is gone (checked above): nothing may have written since
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    assert store.latest_lineage(KILLED, "sft_checkpoint") is None
    assert store.latest_lineage(KILLED, "base_model") is not None
    assert not (tmp_path / "checkpoints" / KILLED / "sft_checkpoint").exists()

    # the run stays STARTED in Dagster until `sx-dagster run|ui` (or the reaper sensor) looks
    instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
    (run,) = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.STARTED
    assert mark_dead_runs_failed(instance) == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []  # the GPU slot is free again
    assert mark_dead_runs_failed(instance) == []


@pytest.mark.parametrize("distributed", ["{subprocess: true}", "{num_processes: 2}"], ids=["pipes-job", "torchrun-2-workers"])
def test_pipes_training_processes_die_with_a_killed_run(tmp_path, monkeypatch, distributed):
    """A training stage run as a Pipes subprocess (the GPU path: ``accelerate launch``; here
    torchrun on CPU, or the job alone) must not outlive its run: an orphaned trainer keeps its
    GPU memory and would write into the checkpoint folder of the next attempt."""
    experiments = _experiments(
        tmp_path,
        f"""
        {KILLED}:
          model: {{name: tiny, tiny: {TINY}}}
          task: {{name: synthetic, n_train: 96, n_test: 4, seed: 5}}
          sft: {{epochs: 200, batch_size: 8, max_length: 128}}
          distributed: {distributed}
        """,
    )
    env = _env(tmp_path, experiments)
    workers = 2 if "num_processes" in distributed else 1
    log = tmp_path / "materialize.log"
    parent = _materialize_sft(env, log, monkeypatch)
    try:
        deadline = time.time() + 400
        while True:
            jobs = [p for p in _descendants(parent.pid) if "sx_dagster.ml.train_job" in _cmdline(p)]
            if len(jobs) >= workers and re.search(r"step \d+/\d+ \{", log.read_text()):  # its trainer's steps, through Pipes
                break
            assert parent.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the training job never started"
            time.sleep(0.5)
        procs = _descendants(parent.pid)  # step process, launcher (torchrun), training workers
        orphan_seconds = _kill_and_time(parent, procs)
    finally:
        if parent.poll() is None:
            parent.kill()
    left = [f"{p.pid}: {_cmdline(p)[:100]}" for p in procs if _running(p)]
    for p in procs:  # only our own orphans, so a failing run does not leave them behind
        with contextlib.suppress(psutil.Error):
            p.kill()
    print(f"{len(procs)} processes under the run gone {orphan_seconds:.2f} s after kill -9 of the run")
    assert not left, left
    assert orphan_seconds < 5
    assert not (tmp_path / "checkpoints" / KILLED / "sft_checkpoint").exists()


_WORKER = "from sx_dagster.parent import die_with_run; die_with_run(); print('armed', flush=True); import time; time.sleep(60)"


def test_a_worker_dies_with_its_guarded_launcher_and_at_once_if_that_is_already_gone():
    """The two halves of ``sx_dagster.parent`` without Dagster: a launcher started through
    ``guarded`` (as torchrun / accelerate are) dies with its parent and its worker dies with it;
    a worker that arms after an ancestor died (still importing when the run was killed) dies at once."""
    launcher = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {_WORKER!r}]); time.sleep(60)"
    middle = "import subprocess, sys, time; from sx_dagster.parent import guarded; "
    middle += f"subprocess.Popen(guarded([sys.executable, '-c', {launcher!r}])); time.sleep(60)"
    step = subprocess.Popen([sys.executable, "-c", middle], cwd=ROOT)
    try:
        deadline = time.time() + 60
        while len(procs := _descendants(step.pid)) < 2:  # the launcher and its worker
            assert time.time() < deadline, "launcher and worker never started"
            time.sleep(0.1)
        time.sleep(3)  # the worker imports and arms
        assert not any("-m sx_dagster.parent" in _cmdline(p) for p in procs)  # the guard exec'd the launcher
        step.kill()
        step.wait()
        t0 = time.perf_counter()
        while any(map(_running, procs)) and time.perf_counter() - t0 < 10:
            time.sleep(0.05)
        assert not any(map(_running, procs)), [_cmdline(p) for p in procs if _running(p)]
        assert time.perf_counter() - t0 < 3  # the kernel's signal, not the 1 s watchdog twice over
    finally:
        for p in _descendants(step.pid):
            p.kill()
        step.kill()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    env = {**os.environ, ANCESTORS_ENV: f"{os.getpid()},{gone.pid}"}
    late = subprocess.run([sys.executable, "-c", _WORKER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert late.returncode == -signal.SIGKILL and "armed" not in late.stdout
    env[ANCESTORS_ENV] = str(os.getpid())  # its ancestors alive: it runs
    code = _WORKER.replace("time.sleep(60)", "pass")
    ok = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "armed" in ok.stdout, ok.stderr[-2000:]


def _upstream_without_pairs(tmp: Path) -> None:
    """micro-b up to its samples, in process: its 1-epoch model gets nothing right, so
    ``outcome_pairs`` has no pairs and its blocking ``non_empty`` check fails."""
    up = ["task_dataset", "base_model", "sft_checkpoint", "sampled_rationales", "rft_checkpoint"]
    assert dg.materialize(ALL_ASSETS, partition_key="micro-b", resources=_resources(tmp), selection=up).success
    n = LineageStore(database=str(tmp / "sx.duckdb")).query(
        "SELECT count(*) FILTER (WHERE correct) AS ok, count(*) FILTER (WHERE NOT correct) AS bad FROM samples"
    )
    if int(n["ok"][0]) and int(n["bad"][0]):
        pytest.skip("micro-b happened to produce pairs")


# ``dagster-daemon run`` with shorter waits between iterations, the same code otherwise: the
# backfill daemon evaluates every 30 s (a constant in dagster._daemon.controller, no setting), the
# run queue every 5 s (the shipped instance keeps the default) and the run-retry consumer every
# 5 s, so a test would mostly wait for their next tick.
_DAEMON = "; ".join(
    (
        "import dagster._daemon.controller as c",
        "from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator as Q",
        "c.DEFAULT_DAEMON_INTERVAL_SECONDS = 2",
        "Q.dequeue_interval_seconds = property(lambda self: 1)",
        "from dagster._daemon.cli import main",
        "main()",
    )
)


@contextlib.contextmanager
def dagster_daemon(tmp: Path, env: dict) -> Iterator[subprocess.Popen]:
    """A real ``dagster-daemon`` on the repository's workspace, logging to ``tmp/daemon.log``;
    stopped on exit (SIGTERM, then kill after 60 s). Its backfill daemon ticks every 2 s, the run
    queue and the run-retry consumer every 1 s (``_DAEMON``)."""
    env = {**env, "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": "1"}
    with (tmp / "daemon.log").open("w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-c", _DAEMON, "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield daemon
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def launch_failing_check_under_the_daemon(tmp: Path, instance_yaml: str) -> tuple[list[dg.DagsterRun], float]:
    """Queue a run of ``outcome_pairs`` (its check fails) as a backfill would, let a real
    ``dagster-daemon`` launch it and apply the instance's run-retry policy; the runs it made."""
    _upstream_without_pairs(tmp)
    # the run's steps in its worker: whether a failed run is retried is the daemon's decision on
    # the run, whatever the executor (one step process fewer to start)
    env = _env(tmp, Path(os.environ["SX_EXPERIMENTS_FILE"]), SX_EXECUTOR="in_process")
    (tmp / "home" / "dagster.yaml").write_text(instance_yaml)
    launch = [sys.executable, "-m", "dagster", "job", "launch", "-m", "sx_dagster.definitions", "-j", "self_explore"]
    launch += ["-o", "outcome_pairs", "--tags", '{"dagster/partition": "micro-b"}']
    proc = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(tmp / "home"))
    t0 = time.perf_counter()
    with dagster_daemon(tmp, env) as daemon:
        deadline = time.time() + 420
        while time.time() < deadline:
            runs = instance.get_runs()
            first = runs[-1]
            if first.status == dg.DagsterRunStatus.FAILURE:
                # the retry daemon has looked at it: it either made a retry or logged why not
                events = [e.message for e in instance.all_logs(first.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
                if len(runs) > 1 or any("Not retrying run" in m for m in events):
                    time.sleep(3)  # a retry, if any, is created in the same tick
                    break
            assert daemon.poll() is None, (tmp / "daemon.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("the run did not fail and get looked at in time:\n" + (tmp / "daemon.log").read_text()[-3000:])
    return instance.get_runs(), time.perf_counter() - t0


def test_run_whose_blocking_check_fails_is_not_retried_by_the_daemon(tmp_path):
    runs, seconds = launch_failing_check_under_the_daemon(tmp_path, (ROOT / "deploy" / "dagster.yaml").read_text())
    print(f"runs made: {len(runs)} ({seconds:.0f} s under the daemon)")
    assert len(runs) == 1  # the old policy launched it again, and it failed the same way
    (run,) = runs
    assert run.status == dg.DagsterRunStatus.FAILURE and run.tags["dagster/will_retry"] == "false"
    assert run.tags["dagster/failure_reason"] == "STEP_FAILURE"
    checks = [
        e.dagster_event.event_specific_data
        for e in dg.DagsterInstance.from_config(str(tmp_path / "home")).all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    ]
    assert ("non_empty", False) in [(c.check_name, c.passed) for c in checks]
