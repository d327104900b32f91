"""A ``capy serve``-like process for the crash test (run as a script, not collected).

uvicorn serves ``create_app(engine_dir)`` on a free loopback port in the main
thread, and one worker thread runs ``Engine(engine_dir, lease_seconds=…).run_worker``.
The port is written to ``--port-file`` once the server accepts connections.

With ``--hang-marker FILE`` the worker's ``restore.before_commit`` hook writes
the job id to FILE and then hangs until the process is killed: a restore that
has done all its work but not committed it.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import uvicorn

from pulumi_capy.engine import Engine
from pulumi_capy.engine.runtime import Hook
from pulumi_capy.engine.stores.contract import JobRecord
from pulumi_capy.server import create_app


def hang_after_marking(marker: Path) -> Hook:
    def hook(job: JobRecord) -> None:
        temporary = marker.with_name(marker.name + ".tmp")
        temporary.write_text(job.id)
        temporary.replace(marker)
        threading.Event().wait()  # until SIGKILL

    return hook


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine-dir", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--lease-seconds", type=float, default=1.0)
    parser.add_argument("--hang-marker", type=Path)
    args = parser.parse_args()

    hooks = (
        {"restore.before_commit": hang_after_marking(args.hang_marker)} if args.hang_marker else {}
    )
    engine = Engine(args.engine_dir, lease_seconds=args.lease_seconds, hooks=hooks)
    stop = threading.Event()
    worker = threading.Thread(
        target=engine.run_worker,
        args=(stop,),
        kwargs={"poll_interval": 0.05, "tick_interval": 0.5},
        name="worker",
        daemon=True,
    )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(args.engine_dir), host="127.0.0.1", port=port, log_level="warning"
        )
    )

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        temporary = args.port_file.with_name(args.port_file.name + ".tmp")
        temporary.write_text(str(port))
        temporary.replace(args.port_file)

    worker.start()
    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])  # until SIGTERM or SIGINT
    stop.set()
    worker.join(timeout=30)
    engine.close()


if __name__ == "__main__":
    main()
