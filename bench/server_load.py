"""Load benchmark of ``capy serve``: GET restore points, against a static-JSON baseline.

Not a test: run it by hand, it stops by itself (~3 x --duration plus setup).

    .venv/bin/python bench/server_load.py [--duration 20] [--connections 32]

What it does, all on loopback, each part in its own process:

1. builds an engine directory with one project over a SQLite database, one
   verified backup and ``--restore-points`` (20) restore points pinned to it;
2. serves it like ``capy serve`` does: uvicorn, one process, ``create_app(dir)``;
3. serves a minimal ASGI app that answers the very same JSON bytes (the answer
   of the capy server, fetched once) under the same uvicorn settings;
4. runs a load generator in a separate process against each in turn:
   ``GET /v1/projects/{id}/restore-points`` with an API key, ``--connections``
   concurrent connections for ``--duration`` seconds. ``wrk`` if it is on PATH
   (Debian: ``apt-get install wrk``), else an asyncio generator of our own;
5. then the same load against the capy app with its read cache off
   (``create_app(dir, read_cache=False)``): every answer computed afresh, as
   right after a write; reported, no target;
6. prints requests/s, p50/p99 latency and errors of each, and the ratio
   capy/static, against the targets: zero errors, ratio >= 0.5, p99 < 100 ms.
   The exit status is 0 when every target is met, 1 otherwise.

``--profile FILE`` samples the capy server with py-spy (``pip install py-spy``)
during its measured run (``--profile-run uncached``: that one), writes the
collapsed stacks to FILE and prints where the busy time goes (writes run in
uvicorn's thread pool, which cProfile would not see).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ORG = "org_default"
START_TIMEOUT = 30.0
TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0

# ---------------------------------------------------------------- servers (child processes)


def uvicorn_config(app: Any, port: int, log_level: str) -> Any:
    """The one set of uvicorn settings both servers run under (``capy serve``'s, 1 process)."""
    import uvicorn

    return uvicorn.Config(app, host=HOST, port=port, log_level=log_level, lifespan="on")


def static_app(body: bytes) -> Any:
    """A minimal ASGI app: every GET answers ``body`` as JSON."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_role(kind: str, source: Path, port_file: Path, log_level: str) -> None:
    """Child process: serve the capy app over ``source`` (an engine dir) or ``source``'s bytes."""
    import uvicorn

    if kind in ("capy", "uncached"):
        from pulumi_capy.server import create_app

        app = create_app(source, read_cache=kind == "capy")
    else:
        app = static_app(source.read_bytes())
    # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for such a socket,
    # as it does when uvicorn binds the port itself
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, port, log_level))

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        temporary = port_file.with_name(port_file.name + ".tmp")
        temporary.write_text(str(port))
        temporary.replace(port_file)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


# ---------------------------------------------------------------- the python load generator


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    detail: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _python_load(
    host: str, port: int, path: str, key: str, connections: int, duration: float
) -> dict[str, Any]:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def one_connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(fraction: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "errors": errors,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
    }


def load_role(port: int, path: str, key: str, connections: int, duration: float) -> None:
    """Child process: the asyncio generator; prints one JSON line."""
    result = asyncio.run(_python_load(HOST, port, path, key, connections, duration))
    print(json.dumps(result))


# ---------------------------------------------------------------- wrk

WRK_REPORT = textwrap.dedent(
    """
    done = function(summary, latency, requests)
      local e = summary.errors
      io.write(string.format(
        "WRK_JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"connect\\": %d, \\"read\\": %d, "
        .. "\\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d, \\"p50_us\\": %d, "
        .. "\\"p99_us\\": %d}\\n",
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(99)))
    end
    """
)


def run_wrk(
    wrk: str, url: str, key: str, connections: int, threads: int, duration: int, workdir: Path
) -> LoadResult:
    script = workdir / "report.lua"
    script.write_text(WRK_REPORT)
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        "-H",
        f"Authorization: Bearer {key}",
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    line = next((line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(data[name] for name in ("connect", "read", "write", "status", "timeout"))
    detail = ", ".join(
        f"{name} {data[name]}"
        for name in ("connect", "read", "write", "status", "timeout")
        if data[name]
    )
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        detail=detail,
    )


def run_python_load(port: int, path: str, key: str, connections: int, duration: int) -> LoadResult:
    command = [
        sys.executable,
        __file__,
        "_load",
        str(port),
        path,
        key,
        str(connections),
        str(duration),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{done.stdout}\n{done.stderr}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return LoadResult(**data)


# ---------------------------------------------------------------- setup


def build_engine_dir(root: Path, restore_points: int) -> tuple[Path, str, str]:
    """An engine dir with a project, a verified backup and restore points; (dir, project, key)."""
    from pulumi_capy.api.models import (
        CreateApiKey,
        CreateBackup,
        CreateProject,
        CreateRestorePoint,
    )
    from pulumi_capy.engine import Engine

    app_db = root / "app.db"
    with contextlib.closing(sqlite3.connect(app_db)) as db, db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        db.executemany(
            "INSERT INTO customers (id, name) VALUES (?, ?)",
            [(i, f"customer-{i}") for i in range(1, 1001)],
        )
    engine_dir = root / ".capy"
    with Engine(engine_dir) as engine:
        project = engine.create_project(
            CreateProject(name="bench", database_url=f"sqlite:///{app_db.resolve()}")
        ).project
        backup = engine.wait_for_job(
            engine.create_backup(project.id, CreateBackup(label="bench")).id, timeout=120
        )
        engine.run_pending()  # the verification
        assert backup.result is not None
        for number in range(restore_points):
            engine.create_restore_point(
                project.id,
                CreateRestorePoint(
                    label=f"point-{number:02d}",
                    backup_key=str(backup.result["backup_key"]),
                    note=f"restore point {number} of the load benchmark",
                ),
            )
        key = engine.create_api_key(
            ORG, CreateApiKey(name="bench", scopes=["backups:read"])
        ).plaintext_api_key.get_secret_value()
    return engine_dir, project.id, key


class ServerProcess:
    def __init__(
        self,
        kind: str,
        source: Path,
        workdir: Path,
        log_level: str,
    ) -> None:
        self.kind = kind
        self.port_file = workdir / f"{kind}.port"
        self.log_path = workdir / f"{kind}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "_serve",
                    kind,
                    str(source),
                    str(self.port_file),
                    log_level,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.port_file.is_file():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {kind} server did not start:\n{self.log()}")
            time.sleep(0.02)
        self.port = int(self.port_file.read_text())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful stop
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def started(kind: str, source: Path, workdir: Path, log_level: str) -> Iterator[ServerProcess]:
    server = ServerProcess(kind, source, workdir, log_level)
    try:
        yield server
    finally:
        server.stop()


def fetch(port: int, path: str, key: str) -> bytes:
    import httpx

    response = httpx.get(
        f"http://{HOST}:{port}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    response.raise_for_status()
    return response.content


# ---------------------------------------------------------------- main


def measure(
    args: argparse.Namespace,
    wrk: str | None,
    server: ServerProcess,
    path: str,
    key: str,
    workdir: Path,
    profile: Path | None = None,
) -> LoadResult:
    if wrk is not None:
        url = f"http://{HOST}:{server.port}{path}"
        run_wrk(wrk, url, key, args.connections, args.threads, 1, workdir)  # warm-up
    else:
        run_python_load(server.port, path, key, args.connections, 1)  # warm-up
    spy = start_py_spy(server.process.pid, args.duration, profile) if profile else None
    try:
        if wrk is not None:
            return run_wrk(wrk, url, key, args.connections, args.threads, args.duration, workdir)
        return run_python_load(server.port, path, key, args.connections, args.duration)
    finally:
        if spy is not None:
            spy.wait(timeout=args.duration + 60)


# ---------------------------------------------------------------- profile

IDLE_FRAMES = ("Condition.wait", "EpollSelector.select", "Thread._wait_for_tstate_lock")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def start_py_spy(pid: int, duration: int, output: Path) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    command = [binary, "record", "--pid", str(pid), "--duration", str(max(1, duration - 1))]
    command += ["--rate", "100", "--nonblocking", "--format", "raw", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, top: int = 15) -> str:
    """The frames the busy samples spend their own time in, and a few that contain them."""
    own: dict[str, int] = {}
    inside: dict[str, int] = {}
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or frames[-1].startswith(IDLE_FRAMES):
            continue
        samples = int(count)
        busy += samples
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        for frame in set(frames):
            inside[frame] = inside.get(frame, 0) + samples
    if not busy:
        return "no busy samples"
    lines = [f"busy samples: {busy}; own time:"]
    for frame, samples in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {samples / busy:6.1%}  {frame}")
    lines.append("inclusive time of the app's own layers:")
    for frame, samples in sorted(inside.items(), key=lambda item: -item[1]):
        if "pulumi_capy" in frame or "serialize_response" in frame or "run_in_threadpool" in frame:
            lines.append(f"  {samples / busy:6.1%}  {frame}")
            if len(lines) > 2 * top + 4:
                break
    return "\n".join(lines)


def report(name: str, result: LoadResult) -> str:
    errors = f"{result.errors}" + (f" ({result.detail})" if result.detail else "")
    return (
        f"{name:<8} {result.rps:>10.0f} {result.p50_ms:>9.2f} {result.p99_ms:>9.2f} "
        f"{result.requests:>10} {errors}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per run (20)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--restore-points", type=int, default=20, help="in the project (20)")
    parser.add_argument(
        "--generator", choices=["auto", "wrk", "python"], default="auto", help="auto: wrk if found"
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn's, for both servers")
    parser.add_argument("--profile", type=Path, help="py-spy the capy server into this file")
    parser.add_argument(
        "--profile-run",
        choices=["capy", "uncached"],
        default="capy",
        help="which --profile samples",
    )
    args = parser.parse_args()

    wrk = shutil.which("wrk") if args.generator in ("auto", "wrk") else None
    if args.generator == "wrk" and wrk is None:
        parser.error("wrk is not on PATH (Debian: apt-get install wrk)")

    with tempfile.TemporaryDirectory(prefix="capy-bench-") as temporary:
        workdir = Path(temporary)
        engine_dir, project_id, key = build_engine_dir(workdir, args.restore_points)
        path = f"/v1/projects/{project_id}/restore-points"
        profile = args.profile.resolve() if args.profile else None
        with started("capy", engine_dir, workdir, args.log_level) as capy:
            body = fetch(capy.port, path, key)
            points = len(json.loads(body)["restore_points"])
            (workdir / "static.json").write_bytes(body)
            with started("static", workdir / "static.json", workdir, args.log_level) as static:
                assert fetch(static.port, path, key) == body
                results = {
                    "static": measure(args, wrk, static, path, key, workdir),
                    "capy": measure(
                        args,
                        wrk,
                        capy,
                        path,
                        key,
                        workdir,
                        profile if args.profile_run == "capy" else None,
                    ),
                }
        # the same app with its read cache off: every answer computed afresh
        with started("uncached", engine_dir, workdir, args.log_level) as bare:
            assert fetch(bare.port, path, key) == body
            results["uncached"] = measure(
                args,
                wrk,
                bare,
                path,
                key,
                workdir,
                profile if args.profile_run == "uncached" else None,
            )

    if wrk:
        generator = f"wrk -t{args.threads}"
    else:
        generator = "python asyncio" + (" (wrk not found)" if args.generator == "auto" else "")
    print(
        f"GET {path.replace(project_id, '{id}')}: {points} restore points, {len(body)} bytes; "
        f"{args.connections} connections x {args.duration} s; generator: {generator}; "
        f"uvicorn, 1 process, CPUs: {os.cpu_count()}"
    )
    print(f"{'server':<8} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'requests':>10} errors")
    for name, result in results.items():
        print(report(name, result))
    capy_result, static_result = results["capy"], results["static"]
    ratio = capy_result.rps / static_result.rps if static_result.rps else 0.0
    print(f"ratio capy/static: {ratio:.2f}")
    uncached = results["uncached"]
    print(
        f"uncached: capy with its read cache off, every answer computed afresh (as right after "
        f"a write): ratio to static {uncached.rps / static_result.rps:.2f}, p99 "
        f"{uncached.p99_ms:.1f} ms, errors {uncached.errors} (no target: the issue's figure "
        "is the steady read)"
    )
    checks = {
        "zero errors": capy_result.errors == 0 and static_result.errors == 0,
        f"ratio >= {TARGET_RATIO}": ratio >= TARGET_RATIO,
        f"p99 < {TARGET_P99_MS:g} ms": capy_result.p99_ms < TARGET_P99_MS,
    }
    for name, ok in checks.items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    if profile is not None:
        print(f"capy server profile (py-spy, collapsed stacks): {profile}")
        print(summarize_profile(profile))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_role(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        load_role(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]))
    else:
        sys.exit(main())
