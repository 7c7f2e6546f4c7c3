"""Run the real gateway (`mg serve`: gRPC workers + Envoy) as a child process for a test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

READY_LINE = "mg is ready"


def local_body(delay_ms: int = 0, prompt: str = "x") -> dict[str, Any]:
    """A request to the offline provider (256x256) that takes `delay_ms` to generate."""
    return {
        "model": "local/sketch",
        "prompt": prompt,
        "size": "256x256",
        "providerOptions": {"local": {"delay_ms": delay_ms}},
    }


@dataclass
class GatewayProcess:
    data_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    envoy_stats_port: int = field(default_factory=free_port)
    # The Python that runs `-m service` (another virtualenv's, to run an installed wheel), and where.
    python: str = sys.executable
    cwd: Path | None = None
    # What that Python runs, and the line it prints once it serves (tests/bench/floor.py is another).
    command: tuple[str, ...] = ("-m", "service", "serve")
    ready_line: str = READY_LINE
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    # copies the gateway's output into `output`
    _pump: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_socket(self) -> Path:
        """Envoy's admin interface (the default place: in the data dir's run/)."""
        return self.data_dir.resolve() / "run" / "envoy-admin.sock"

    @property
    def key(self) -> str:
        return (self.data_dir / "dev-api-key").read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MG_HTTP_PORT": str(self.http_port),
            "MG_GRPC_PORT": str(self.grpc_port),
            "MG_METRICS_PORT": str(self.metrics_port),
            "MG_ENVOY_STATS_PORT": str(self.envoy_stats_port),
            "MG_DATA_DIR": str(self.data_dir),
            "MG_WORKERS": "2",
            "MG_ENVOY_CONCURRENCY": "1",
            # Tests that exercise rate limits create projects with their own --rpm.
            "MG_DEFAULT_RPM": "100000",
            **self.env_overrides,
        }

    def generate(
        self,
        body: Any,
        key: str | None = None,
        *,
        timeout: float = 60,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST /v1/images/generations through Envoy, with `key` (default: the dev key)."""
        return httpx.post(
            f"{self.http_url}/v1/images/generations",
            headers={"Authorization": f"Bearer {key or self.key}", **(headers or {})},
            json=body,
            timeout=timeout,
        )

    def mg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the admin CLI against this gateway's store."""
        return subprocess.run(
            [self.python, "-m", "service", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            check=check,
        )

    def project(self, name: str) -> dict[str, Any]:
        """`mg projects show <name> --json`: the project, its spend and what it holds reserved."""
        return dict(json.loads(self.mg("projects", "show", name, "--json").stdout))

    def usage(self, project: str) -> list[dict[str, Any]]:
        """`mg usage --project <project> --json`: the project's ledger totals, a row per model."""
        return list(json.loads(self.mg("usage", "--project", project, "--json").stdout))

    def new_key(self, project: str, *options: str) -> str:
        """Create a project with these options and a key for it; returns the key."""
        self.mg("projects", "create", project, *options)
        return self.mg("keys", "create", "--project", project).stdout.strip()

    def start(self, timeout_s: float = 60, command_prefix: list[str] | None = None) -> GatewayProcess:
        self.process = subprocess.Popen(
            [*(command_prefix or []), self.python, *self.command],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, so a test can kill the whole gateway
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            with self.process.stdout:  # closed at the end of the output: the gateway has exited
                for line in self.process.stdout:
                    self.output.append(line)
                    if self.ready_line in line:
                        ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gateway did not start:\n" + "".join(self.output))
        return self

    def output_tail(self, lines: int = 40) -> str:
        """The last lines the gateway printed (its log), for a failing test's report."""
        return f"--- {self.data_dir.name}: last {lines} lines of output\n" + "".join(self.output[-lines:])

    def children(self) -> list[int]:
        assert self.process is not None
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def envoy_pid(self) -> int:
        for pid in self.children():
            if "envoy" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode():
                return pid
        raise LookupError("no envoy child")

    def crash(self) -> None:
        """kill -9 the supervisor, its workers and Envoy at once, as a machine failure would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._close_output()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_output()

    def _close_output(self) -> None:
        """Once the gateway has exited: `output` holds every line it printed (the pump closes the pipe)."""
        if self._pump is not None:
            self._pump.join(5)
