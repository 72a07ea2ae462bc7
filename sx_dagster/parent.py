"""A process the run started dies with the process that started it.

Dagster's step processes arm this in :func:`sx_dagster.failures.die_with_parent`. A training
stage run as a Pipes subprocess adds two more generations: the launcher (``torchrun`` on CPU,
``accelerate launch`` on GPUs) and its training workers. Without this, a ``kill -9`` of the run
left them training (holding GPU memory, later writing into a checkpoint folder); with it the
kernel SIGKILLs each generation the moment the one above it dies.

- :func:`die_with` arms ``PR_SET_PDEATHSIG`` (Linux) for this process, kills it at once if the
  parent is already gone, and starts a watchdog thread (kernels without the signal).
- ``python -m sx_dagster.parent PID -- CMD ...`` (:func:`guarded`) arms it for ``PID`` and
  ``exec``s ``CMD``: the signal survives ``exec``, so a launcher that is not ours (torchrun,
  accelerate) gets it too, and ``SX_RUN_ANCESTORS`` tells its workers whom not to outlive.
- :func:`die_with_run`, first thing in ``sx_dagster.ml.train_job``: a job or worker dies with
  its parent, and at once if the step or launcher above it is already gone (a worker still
  importing when its launcher was killed would otherwise be re-parented and train on).

No Dagster or torch import: a Pipes child may run where only ``dagster-pipes`` is installed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def arm_death_signal() -> bool:
    """Ask the kernel to SIGKILL this process when the thread that started it ends (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    return False


ANCESTORS_ENV = "SX_RUN_ANCESTORS"  # pids a training job must not outlive: the step, the launcher


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (pid reused): not ours to judge
        return True
    return True


def die_with(ppid: int, watchdog: bool = True, ancestors: tuple[int, ...] = ()) -> None:
    """Exit (SIGKILL) as soon as process ``ppid``, this one's parent, or one of ``ancestors`` dies."""
    arm_death_signal()

    def orphaned() -> bool:
        return os.getppid() != ppid or not all(_alive(p) for p in ancestors)

    if orphaned():  # it died before the signal was armed: this one was re-parented
        os.kill(os.getpid(), signal.SIGKILL)
    if not watchdog:
        return

    def watch() -> None:  # for kernels without PDEATHSIG; on Linux the signal comes first
        while True:
            time.sleep(1.0)
            if orphaned():
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="sx-parent-watchdog", daemon=True).start()


def die_with_run() -> None:
    """In a training job started through :func:`guarded` (directly, or as a worker of the
    launcher it guards): die with the step and the launcher above it. A worker that starts
    after its launcher was killed (re-parented before it could arm) dies at once."""
    ancestors = tuple(int(p) for p in os.environ.get(ANCESTORS_ENV, "").split(",") if p.isdigit() and int(p) != os.getpid())
    die_with(os.getppid(), ancestors=ancestors)


def guarded(cmd: list[str]) -> list[str]:
    """``cmd`` run so that it dies with this process (see the module docstring)."""
    return [sys.executable, "-m", "sx_dagster.parent", str(os.getpid()), "--", *cmd]


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--" or not argv[1].isdigit():
        print("usage: python -m sx_dagster.parent PID -- CMD [ARGS ...]", file=sys.stderr)
        return 2
    step = int(argv[1])
    die_with(step, watchdog=False)  # a thread would not survive exec; the signal does
    # The launcher keeps this pid through exec: its workers learn whom not to outlive.
    os.environ[ANCESTORS_ENV] = f"{step},{os.getpid()}"
    os.execvp(argv[3], argv[3:])
    return 127  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv))
