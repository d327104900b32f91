"""Child processes that must not outlive the worker that started them (``pg_receivewal``,
a recovery instance's ``postgres``): Linux sends them a signal when their parent dies,
so a worker killed with SIGKILL leaves no streamer or server running behind it.

The signal is set by util-linux's ``setpriv --pdeathsig`` right before it executes the
command, not by Python code run in the forked child (``preexec_fn``): that is unsafe in
a process with other threads, and crashes inside a Pulumi provider (gRPC's fork handlers).
Without ``setpriv`` the child runs untied; the sweep of a dead worker's directories stops
what it left (``instance.sweep``).
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
from typing import Any

__all__ = ["popen_tied", "stop_process"]


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")


def popen_tied(
    command: list[str],
    *,
    on_parent_death: int = signal.SIGTERM,
    user: str | None = None,
    **kwargs: Any,
) -> subprocess.Popen[bytes]:
    """``Popen`` whose child receives ``on_parent_death`` when this thread's process dies,
    run as ``user`` when given (``setpriv`` changes it, and sets the signal after that
    change, which would clear it). Neither needs Python code in the forked child, nor
    ``Popen(user=…)``, which forks too (both crash children in a gRPC process).

    Linux ties the signal to the thread that started the child: start it from a thread
    that lives as long as the child should (the streamer's, the job's)."""
    setpriv = _setpriv()
    if setpriv is None:
        return subprocess.Popen(command, user=user, **kwargs)
    name = signal.Signals(on_parent_death).name.removeprefix("SIG")
    wrapper = [setpriv, f"--pdeathsig={name}"]
    if user is not None:
        wrapper += [f"--reuid={user}", f"--regid={user}", "--init-groups"]
    return subprocess.Popen([*wrapper, "--", *command], **kwargs)


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
