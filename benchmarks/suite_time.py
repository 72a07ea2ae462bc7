"""Time the test suite the way CI runs it, and say which machine it ran on.

    .venv/bin/python benchmarks/suite_time.py                       # bash scripts/test.sh
    .venv/bin/python benchmarks/suite_time.py -- -m "not slow"      # the quick loop
    .venv/bin/python benchmarks/suite_time.py --label "after X" -- --durations=30

Runs ``bash scripts/test.sh ARGS`` (install check, ruff, pytest), showing its output as it
comes, then prints one table row: wall time, pytest's own time, tests passed, and the machine
(CPU model, cores, AVX512 or AVX2, native bf16, fp32 GEMM GFLOP/s from
``../shared/tools/gemm_gflops.py`` where it is beside the repository). It also prints how busy
the cores were over the run (Linux, ``/proc/stat``, every process counted): the suite is
CPU-bound, so a change helps only if it removes CPU work. The row is appended to
``benchmarks/results/test_suite_runs.csv``. The suite's target (issue 27): at most
6 minutes for ``bash scripts/test.sh`` on a 2-core AVX2 machine; run this there to check it.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "test_suite_runs.csv"
GEMM_TOOL = ROOT.parent / "shared" / "tools" / "gemm_gflops.py"
FIELDS = ["date", "commit", "command", "machine", "workers", "wall_s", "pytest_s", "passed", "what", "cores_busy"]
SUMMARY = re.compile(r"(\d+) passed.*? in ([\d.]+)s")


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot; None off Linux."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def machine(gemm: bool = True) -> str:
    """CPU model, cores, vector extensions and (``gemm``) fp32 GEMM speed, in one line."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    isa = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = "native bf16" if {"avx512_bf16", "amx_bf16"} & flags else "no native bf16"
    parts = [model, f"{os.cpu_count()} cores", isa, bf16]
    if gemm and GEMM_TOOL.exists():
        out = subprocess.run([sys.executable, str(GEMM_TOOL)], capture_output=True, text=True).stdout
        found = re.search(r"fp32 GEMM: (\d+) GFLOP/s", out)
        if found:
            parts.append(f"fp32 {found.group(1)} GFLOP/s")
    return ", ".join(parts)


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")  # not its own rows
    return head + ("+changes" if changed else "")


def run(args: list[str]) -> dict:
    """``bash scripts/test.sh ARGS`` from a shell's environment (no pytest variables of a caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    before, t0 = _cpu_jiffies(), time.perf_counter()
    lines = []
    with subprocess.Popen(
        ["bash", "scripts/test.sh", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout:  # pytest's progress as it comes, kept for its summary line
            sys.stdout.write(line)
            lines.append(line)
    wall = time.perf_counter() - t0
    after = _cpu_jiffies()
    out = "".join(lines)
    found = SUMMARY.findall(out)
    busy = ""
    if before and after and after[1] > before[1]:
        busy = f"{(after[0] - before[0]) / (after[1] - before[1]):.0%}"
    return {
        "returncode": proc.returncode,
        "wall_s": round(wall),
        "pytest_s": float(found[-1][1]) if found else "",
        "passed": int(found[-1][0]) if found else "",
        "cores_busy": busy,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="", help="what this run is (the CSV's 'what' column)")
    p.add_argument("--results", type=Path, default=RESULTS, help="CSV the row is appended to")
    p.add_argument("--skip-gemm", action="store_true", help="leave out the GEMM speed (about 3 s)")
    p.add_argument("pytest_args", nargs="*", help="after --: arguments for scripts/test.sh (pytest's)")
    a = p.parse_args(argv)
    where = machine(gemm=not a.skip_gemm)  # before the run: the GEMM check wants an idle machine
    r = run(a.pytest_args)
    command = shlex.join(["bash", "scripts/test.sh", *a.pytest_args])
    row = {
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "command": command,
        "machine": where,
        "workers": os.environ.get("SX_TEST_WORKERS", "2"),
        "wall_s": r["wall_s"],
        "pytest_s": r["pytest_s"],
        "passed": r["passed"],
        "what": a.label or ("suite_time.py" if r["returncode"] == 0 else f"FAILED (exit {r['returncode']})"),
        "cores_busy": r["cores_busy"],
    }
    new = not a.results.exists()
    with a.results.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    print("| command | machine | wall | pytest | passed | cores busy |\n|---|---|---:|---:|---:|---:|")
    wall = f"{r['wall_s'] // 60} min {r['wall_s'] % 60:02d} s"
    print(f"| `{command}` | {where} | {wall} | {r['pytest_s']} s | {r['passed']} | {r['cores_busy']} |")
    print(f"row appended to {a.results}")
    return r["returncode"]


if __name__ == "__main__":
    sys.exit(main())
