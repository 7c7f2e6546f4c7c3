"""`mg serve`: the gRPC worker processes and Envoy, started and watched as one gateway.

- Workers (one per core by default) share the gRPC port with SO_REUSEPORT. A worker that dies is
  restarted; one that cannot start stops the gateway.
- Envoy starts once every worker serves. If Envoy dies, the gateway says so and exits non-zero
  rather than half-running.
- `--no-envoy` runs the workers alone, for deployments that run Envoy apart (docker-compose).
- SIGTERM / SIGINT: workers stop taking new calls and finish in-flight ones (up to the shutdown
  grace), Envoy keeps relaying their answers until they are done, then Envoy stops; exit 0.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from service.config import Settings
from service.runtime.edge import EnvoyProcess, write_edge_files
from service.runtime.envoy_admin import AdminSocketError
from service.runtime.open_files import raise_open_files_limit

log = logging.getLogger("mg")
START_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
# glibc hands every large block (an image, a response) back to the kernel when it is freed, so the
# next one is paged in afresh, at about 1 ms per MB on this kind of machine (building an 8-image
# ImagesResponse: 12.8 ms; with these, 2.2 ms). Workers keep freed memory for reuse instead: blocks
# up to 64 MB come from the heap, which is trimmed only past 128 MB free. And two heaps (arenas),
# not glibc's eight per core: gRPC's threads allocate beside the event loop's, and each arena of its
# own kept its freed blocks apart: 1,000 generations held took ~8 KB less per call in a worker with
# two (docs/performance.md). The environment wins.
MALLOC_TUNING = {
    "MALLOC_MMAP_THRESHOLD_": str(64 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(128 << 20),
    "MALLOC_ARENA_MAX": "2",
}


class StartupError(RuntimeError):
    pass


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Fail early and clearly if the port is taken (SO_REUSEPORT would otherwise share it silently).

    The probe binds as Envoy and gRPC do, with SO_REUSEADDR: connections of a gateway that just
    stopped linger in TIME_WAIT on its ports, and they must not keep a restart from binding."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise port_taken(what, host, port, exc) from exc


def port_taken(what: str, host: str, port: int, exc: OSError) -> StartupError:
    return StartupError(f"{what} port {host}:{port} is in use ({exc.strerror})")


class WorkerProcess:
    def __init__(self, index: int, metrics_dir: Path) -> None:
        self.index = index
        self.metrics_dir = metrics_dir
        self.process: subprocess.Popen[bytes] | None = None
        self._ready_fd = -1  # the read end of the pipe the worker writes "ready" to

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self.spawn()
        self.wait_ready(time.monotonic() + timeout_s)

    def spawn(self) -> None:
        """Start the process; `wait_ready` waits until it serves."""
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.runtime.server", "--ready-fd", str(write_fd)],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                # prometheus_client's multiprocess mode: each worker writes its values here
                env={**MALLOC_TUNING, **os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)},
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._ready_fd = read_fd

    def wait_ready(self, deadline: float) -> None:
        read_fd, self._ready_fd = self._ready_fd, -1
        try:
            if not _read_ready(read_fd, max(0.0, deadline - time.monotonic())):
                code = None if self.process is None else self.process.poll()
                raise StartupError(f"gRPC worker {self.index} did not start (exit code {code})")
        finally:
            os.close(read_fd)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout_s: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not drain in time; killing it", self.index)
            self.process.kill()
            self.process.wait()


def _read_ready(fd: int, timeout_s: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return False
        return os.read(fd, 64).startswith(b"ready")


class Gateway:
    def __init__(self, settings: Settings, *, with_envoy: bool = True) -> None:
        self.settings = settings
        run_dir = settings.run_dir
        self.metrics_dir = run_dir / "metrics"
        self.workers = [WorkerProcess(i, self.metrics_dir) for i in range(settings.worker_count)]
        self.envoy = (
            EnvoyProcess(settings, write_edge_files(settings, run_dir / "envoy"), run_dir / "envoy.log")
            if with_envoy
            else None
        )
        self._stop_requested = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True

    def start(self) -> None:
        s = self.settings
        ensure_port_free(s.grpc_host, s.grpc_port, "gRPC")
        if self.envoy is not None:
            ensure_port_free(s.http_host, s.http_port, "HTTP")
            ensure_port_free("127.0.0.1", s.envoy_stats_port, "Envoy stats")
            try:
                self.envoy.claim_admin_socket()
            except (AdminSocketError, OSError) as exc:
                raise StartupError(str(exc)) from exc
        # values of a previous run's workers must not be summed into this one's
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        if s.metrics_port:
            ensure_port_free(s.metrics_host, s.metrics_port, "metrics")
        # Every process starts at once and is then waited for: started one after another, each
        # waiting for the last, a gateway of two workers took ~1.25 s to be ready instead of ~0.85 s.
        # A request Envoy relays before the workers serve is refused (503), but nothing is told the
        # gateway is ready before all of them are.
        deadline = time.monotonic() + START_TIMEOUT_S
        for worker in self.workers:
            worker.spawn()
        if self.envoy is not None:
            self.envoy.start()
        for worker in self.workers:
            worker.wait_ready(deadline)
        if self.envoy is not None and not self.envoy.wait_ready(max(0.0, deadline - time.monotonic())):
            raise StartupError(f"Envoy did not become ready:\n{self.envoy.log_tail()}")
        # Last: its thread must not exist while Envoy is forked (see edge.die_with_parent).
        if s.metrics_port:
            try:
                serve_metrics(s.metrics_host, s.metrics_port, self.metrics_dir)
            except OSError as exc:  # taken since the check above
                raise port_taken("metrics", s.metrics_host, s.metrics_port, exc) from exc

    def watch(self) -> int:
        """Block until asked to stop (0) or Envoy dies (1)."""
        while not self._stop_requested:
            if self._envoy_died():
                return 1
            for worker in self.workers:
                code = worker.exit_code()
                if code is not None:
                    log.error("gRPC worker %d exited with code %s; restarting it", worker.index, code)
                    if worker.process is not None:
                        mark_process_dead(worker.process.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
                    try:
                        worker.start()
                    except StartupError as exc:
                        log.error("%s; stopping the gateway.", exc)
                        return 1
            time.sleep(POLL_INTERVAL_S)
        return 0

    def _envoy_died(self) -> bool:
        if self.envoy is None or (code := self.envoy.exit_code()) is None:
            return False
        log.error("Envoy exited with code %s; stopping the gateway.\n%s", code, self.envoy.log_tail())
        return True

    def stop(self) -> None:
        # Workers first: they finish in-flight calls while Envoy still relays the answers.
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            worker.wait(self.settings.shutdown_grace_s + 5)
        if self.envoy is not None:
            self.envoy.stop()


def serve_metrics(host: str, port: int, directory: Path) -> None:
    """Prometheus text format on http://host:port/metrics: the sum over every worker process."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def serve(settings: Settings, on_ready: Callable[[Settings], None], *, with_envoy: bool = True) -> int:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    raise_open_files_limit(settings.envoy_max_connections)  # before the children, which inherit it
    try:
        gateway = Gateway(settings, with_envoy=with_envoy)
    except AdminSocketError as exc:
        log.error("mg could not start: %s", exc)
        return 1
    signal.signal(signal.SIGTERM, gateway.request_stop)
    signal.signal(signal.SIGINT, gateway.request_stop)
    try:
        gateway.start()
    except StartupError as exc:
        log.error("mg could not start: %s", exc)
        gateway.stop()
        return 1
    on_ready(settings)
    code = gateway.watch()
    gateway.stop()
    log.info("mg stopped")
    return code
