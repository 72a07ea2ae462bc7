"""Stop a long stage cleanly on SIGTERM or SIGINT (issue 13).

Dagster turns both signals into an exception raised wherever the step's main thread happens
to be: in the middle of a checkpoint save, a DuckDB commit or a ``finally`` block. Inside
:func:`graceful` a signal only sets a flag instead; the long loops call :func:`check` at safe
points (between optimizer steps, generation batches and chunks), which raises Dagster's own
interrupt there, so the step stops with nothing half-written, is not retried, and committed
chunks stay for the next run to resume from. A second signal, or no safe point within
``GRACE_S`` seconds, interrupts at once as Dagster would have.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

try:
    from dagster._core.errors import DagsterExecutionInterruptedError
except ImportError:  # the ML layer alone (a Pipes child, benchmarks/gpu_check.py on a GPU box) runs without Dagster

    class DagsterExecutionInterruptedError(BaseException):  # type: ignore[no-redef]
        """Stand-in with Dagster's base class, so a stop is still not an ``Exception``."""


GRACE_S = 5.0  # the longest a stop waits for a safe point before interrupting where it is
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict = {"signal": None, "at": None, "depth": 0, "last": None}


class StopRequested(DagsterExecutionInterruptedError):
    """Raised at a safe point after SIGTERM/SIGINT. ``sx_dagster.failures.step`` turns it into a
    step failure that is not retried (Dagster's retry policy would re-run an interrupted step)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def requested() -> str | None:
    """The name of the signal that asked this process to stop, if one did."""
    return _state["signal"]


def last_stop() -> str | None:
    """The signal that last stopped a stage in this process (``sx-dagster run`` exits with 128 + it)."""
    return _state["last"]


def check(where: str = "") -> None:
    """Raise :class:`StopRequested` if a stop was asked for (call it at safe points only)."""
    sig = _state["signal"]
    if sig is not None:
        _state["last"] = sig
        waited = time.monotonic() - _state["at"]
        raise StopRequested(f"stopped on {sig}{f' {where}' if where else ''}, {waited:.1f} s after the signal")


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _state["signal"] is not None:  # a second signal (or the grace timer): stop right here
        _state["last"] = name
        raise StopRequested(f"stopped on a second {name} (no safe point reached)")
    _state["signal"], _state["at"] = name, time.monotonic()

    def force() -> None:  # a long call with no safe point: interrupt it as Dagster would
        time.sleep(GRACE_S)
        if _state["depth"] > 0 and _state["signal"] is not None:
            _thread.interrupt_main(signal.SIGINT)

    threading.Thread(target=force, name="sx-stop-grace", daemon=True).start()


@contextlib.contextmanager
def graceful(log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Within this block SIGTERM/SIGINT request a stop at the next :func:`check` instead of
    raising wherever the code is. A no-op off the main thread (no signal handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    if _state["depth"] == 0:
        # A signal Dagster captured between steps (its flag) is a stop request too.
        try:
            from dagster._utils.interrupts import check_captured_interrupt
        except ImportError:  # no Dagster in this process: nothing captured a signal for us
            check_captured_interrupt = bool

        if check_captured_interrupt():
            _state["signal"], _state["at"] = "an earlier signal", time.monotonic()
    _state["depth"] += 1
    for s in _SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
        check("after the last safe point")  # a signal after the last safe point still stops the run
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            for s, h in previous.items():
                signal.signal(s, h)
            if _state["signal"] is not None and log is not None:
                log(f"stop requested by {_state['signal']}: stopped at a safe point")
            _state["signal"] = _state["at"] = None
