"""Child processes that must not outlive the worker that started them (``pg_receivewal``,
a recovery instance's ``postgres``): Linux sends them a signal when their parent dies,
so a worker killed with SIGKILL leaves no streamer or server running behind it."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["popen_tied", "stop_process"]

PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    def set_signal() -> None:
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return set_signal


def popen_tied(
    command: list[str], *, on_parent_death: int = signal.SIGTERM, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """``Popen`` whose child receives ``on_parent_death`` when this thread's process dies.

    Linux ties the signal to the thread that started the child: start it from a thread
    that lives as long as the child should (the streamer's, the job's)."""
    return subprocess.Popen(command, preexec_fn=_die_with_parent(on_parent_death), **kwargs)


def stop_process(process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM) -> None:
    """Signal the child, then kill it if it has not ended within 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
