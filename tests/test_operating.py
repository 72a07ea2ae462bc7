"""Operating it (issue 13): stop cleanly on SIGTERM/SIGINT and resume, four CLIs starting at once
on a new DAGSTER_HOME, a damaged lineage store named, checks that say which experiment, the
executor on a CPU-only machine, and the charts a user reads.

Real processes and signals throughout: ``sx-dagster run`` as a subprocess, signalled mid-stage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from sx_dagster import stopping
from sx_dagster.failures import permanent_reason
from sx_dagster.resources.lineage import LineageStore, LineageStoreError

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path, **extra: str) -> dict:
    return {**os.environ, "SX_DATA_DIR": str(tmp), "DAGSTER_HOME": str(tmp / "home"), **extra}


def _sx(*args: str) -> list[str]:
    return [sys.executable, "-m", "sx_dagster", *args]


def _signal_at(tmp: Path, args: list[str], marker: str, sig: signal.Signals, delay: float, **env: str) -> tuple[int, float, str]:
    """Start ``sx-dagster ARGS``, send ``sig`` ``delay`` s after ``marker`` shows in its log;
    returns (exit code, seconds from the signal to the exit, log)."""
    log = tmp / f"run-{sig.name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(_sx(*args), cwd=ROOT, env=_env(tmp, **env), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 400
        while marker not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, f"{marker!r} never showed"
            time.sleep(0.1)
        time.sleep(delay)
        t0 = time.perf_counter()
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
        return rc, time.perf_counter() - t0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_during_sft_stops_between_optimizer_steps_without_a_checkpoint(tmp_path):
    # With the retry policy users run with (the tests' default is no retries): Dagster retries an
    # interrupted step, and a stop must not come back as a retry after the backoff.
    args = ["run", "--experiment", "micro"]
    rc, seconds, log = _signal_at(tmp_path, args, "sft training:", signal.SIGTERM, 2.0, SX_STEP_RETRIES="2", SX_STEP_RETRY_DELAY="1")
    print(f"SIGTERM during SFT: stopped in {seconds:.2f} s, exit {rc}")
    assert rc == 128 + signal.SIGTERM, log[-3000:]
    assert seconds < 10 and "STEP_UP_FOR_RETRY" not in log and "STEP_RESTARTED" not in log
    assert "stopped on SIGTERM after optimizer step" in log and "no checkpoint written" in log
    assert not (tmp_path / "checkpoints" / "micro" / "sft_checkpoint").exists()
    assert LineageStore(database=str(tmp_path / "sx.duckdb")).latest_lineage("micro", "sft_checkpoint") is None


def test_sigint_during_sampling_keeps_committed_chunks_and_the_next_run_resumes(tmp_path):
    # micro samples 96 questions in chunks of 32: stop after the first chunk is committed
    rc, seconds, log = _signal_at(tmp_path, ["run", "--experiment", "micro"], "chunk 1/3:", signal.SIGINT, 0.0)
    print(f"SIGINT during sampling: stopped in {seconds:.2f} s, exit {rc}")
    assert rc == 128 + signal.SIGINT, log[-3000:]
    assert seconds < 10
    assert "stopped on SIGINT" in log
    resumed = subprocess.run(
        _sx("run", "--experiment", "micro", "--select", "sampled_rationales"),
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming: " in out and "/3 chunks already committed" in out


def test_four_runs_start_at_once_on_a_new_dagster_home(tmp_path):
    """Before: all four failed in Dagster's SQLite set-up (UNIQUE constraint failed: alembic_version)."""
    assert not (tmp_path / "home").exists()
    logs = [tmp_path / f"{i}.log" for i in range(4)]
    procs = []
    for path in logs:
        with path.open("w") as out:
            cmd = _sx("run", "--experiment", "micro-b", "--select", "task_dataset")
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=600) for p in procs]
    text = "".join(p.read_text() for p in logs)
    assert codes == [0, 0, 0, 0], text[-4000:]
    assert "alembic_version" not in text
    instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
    assert len(instance.get_runs()) == 4
    # `sx-dagster init` (before any `dagster ...` line) is idempotent on a ready home
    init = subprocess.run(_sx("init"), cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert init.returncode == 0 and "instance ready" in init.stdout


def test_damaged_lineage_store_names_the_file_and_what_to_do(tmp_path):
    db = tmp_path / "sx.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t AS SELECT range AS i FROM range(100000)")
    con.close()
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])  # truncated
    with pytest.raises(LineageStoreError) as err:
        LineageStore(database=str(db)).query("SELECT 1")
    assert str(db) in str(err.value) and "move it aside" in str(err.value) and "Restore it" in str(err.value)
    assert "damaged" in permanent_reason(err.value)  # so the step fails once, not retried


def test_stop_waits_for_a_safe_point_and_a_long_call_is_interrupted_after_the_grace():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under `nohup cmd &`, Python's handler otherwise
    with pytest.raises(stopping.StopRequested, match="stopped on SIGTERM at the safe point"):
        with stopping.graceful():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler ran: nothing raised outside a safe point
            stopping.check("at the safe point")
    assert stopping.last_stop() == "SIGTERM" and stopping.requested() is None
    t0 = time.perf_counter()
    with pytest.raises(stopping.StopRequested, match="no safe point"):
        with stopping.graceful():
            os.kill(os.getpid(), signal.SIGINT)
            while time.perf_counter() - t0 < 30:  # a loop that never reaches check()
                time.sleep(0.05)
    assert time.perf_counter() - t0 < stopping.GRACE_S + 2
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_executor_is_in_process_without_cuda_and_switchable(monkeypatch):
    import sx_dagster.definitions as d

    monkeypatch.setattr(d, "_has_cuda", lambda: False)
    monkeypatch.delenv("SX_EXECUTOR", raising=False)
    assert d.executor_kind() == "in_process" and d.executor().name == "in_process"
    monkeypatch.setattr(d, "_has_cuda", lambda: True)
    assert d.executor_kind() == "multiprocess"
    monkeypatch.setenv("SX_EXECUTOR", "in_process")
    assert d.executor().name == "in_process"
    monkeypatch.setenv("SX_EXECUTOR", "multiprocess")
    assert d.executor().name == "multiprocess"
    monkeypatch.setenv("SX_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="SX_EXECUTOR"):
        d.executor_kind()


def test_eval_chart_of_zeros_keeps_its_scale_and_labels_do_not_overlap():
    from sx_dagster.assets._plots import bar_figure

    models = ["sft", "rft", "outcome_dpo", "self_explore", "base"]
    fig = bar_figure(models, [0, 0, 0, 0, 0], "test accuracy", "%", ymax=100)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0, 100)
    fig.canvas.draw()  # the labels' boxes do not overlap (long names wrap at their underscores)
    boxes = [t.get_window_extent() for t in ax.get_xticklabels()]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False))
    hist = bar_figure([1, 2, 3], [3, 1, 2], "first pit", "rationales", integer=True).axes[0]
    assert all(float(t).is_integer() for t in hist.get_yticks())


def test_checks_name_the_experiment_and_have_descriptions():
    from sx_dagster.assets import ALL_ASSETS
    from sx_dagster.assets._stage import name_experiment

    specs = [s for a in ALL_ASSETS for s in a.check_specs]
    assert specs and all(s.description for s in specs), [s.name for s in specs if not s.description]
    (r,) = name_experiment([dg.AssetCheckResult(check_name="non_empty", passed=False, metadata={"pairs": 0})], "micro-b")
    assert r.description.startswith("[micro-b]") and "FAILED" in r.description and "pairs=0" in r.description
    assert r.metadata["experiment"].value == "micro-b"
    groups = {a.group_names_by_key[k] for a in ALL_ASSETS for k in a.keys}
    assert len(groups) <= 3, groups
