"""`make bench`: what mg adds between a caller and a provider, measured against the direct path.

A fast fake OpenAI Images upstream (fake_upstream.py) runs on loopback; the gateway runs on its
default settings (a JSON log line per request included) with a real key and every enforcement step
on (rate limit raised out of the way), with OpenAI pointed at the fake. wrk (bounded: fixed duration
and concurrency) loads the gateway and the fake directly, interleaved round by round so drift on a
noisy machine hits both alike.

Per scenario: requests/s, p50/p99 latency, errors, the ratio to direct, CPU ms per request of the
gateway (Envoy + supervisor + workers), and peak RSS of the gateway. Idle RSS is measured after
start-up. Results: a Markdown table on stdout and JSON in $BENCH_OUT (default .mg/bench.json).

    BENCH_FLOOR=1      also the design's floor (floor.py) per scenario, in the same rounds
    BENCH_PIN=1        gateway on CPU 1 (one worker, one Envoy thread), wrk + fake on CPU 0,
                       exactly as the peer harness pins the peer gateways; held-1000 and held-10000
                       stay unpinned, on the defaults (one worker per core)
    BENCH_ROUNDS=2 BENCH_DURATION=8
    BENCH_SCENARIOS=small-c1,small-c32,large-c16,large8-c1,held-1000,held-c1000,held-10000,edit-4mb-c8,stream-c8

The held scenarios also report the memory each call in flight holds: (peak RSS - idle RSS) / callers.

stream-c8 (tests/bench/streamed.py) measures streamed generations: time to the first partial image
and to the completed event, through the gateway and straight to the fake it streams from.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.bench import floor as floor_module  # noqa: E402
from tests.bench import streamed  # noqa: E402
from tests.support.gateway import GatewayProcess  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

UPSTREAM_KEY = "sk-fake-upstream"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
PIN = os.environ.get("BENCH_PIN") == "1"
# With BENCH_PIN the bench pins itself to CPU 0, and a child inherits its parent's CPUs: what is not
# pinned is started on every CPU explicitly (taken here, before the bench pins itself).
EVERY_CPU = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
FLOOR = os.environ.get("BENCH_FLOOR") == "1"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    concurrency: int
    model: str  # as the gateway names it; direct gets the part after "/"
    n: int = 1
    fake_args: tuple[str, ...] = ()
    duration_s: int = 0  # 0: BENCH_DURATION
    timeout_s: int = 20
    rounds: int = 0  # 0: BENCH_ROUNDS
    pinned: bool = True  # False: gateway on its defaults (one worker per core), unpinned, always
    upload_bytes: int = 0  # > 0: an edit (POST /v1/images/edits) uploading a PNG of about this size

    @property
    def pin(self) -> bool:
        return PIN and self.pinned


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("small-c1", "tiny image, concurrency 1 (added latency)", 1, "openai/dall-e-3"),
        Scenario("small-c32", "tiny image, concurrency 32 (per-request overhead)", 32, "openai/dall-e-3"),
        Scenario("large-c16", "1.5 MB base64 image, concurrency 16", 16, "openai/dall-e-3",
                 fake_args=("--b64-bytes", "1500000")),
        Scenario("large8-c1", "8 images of 1.5 MB in one response, concurrency 1", 1, "openai/gpt-image-1",
                 n=8, fake_args=("--b64-bytes", "1500000")),
        Scenario("held-1000", "1,000 concurrent requests held 20 s by the upstream", 1000, "openai/dall-e-3",
                 fake_args=("--delay-ms", "20000"), duration_s=30, timeout_s=40, rounds=1, pinned=False),
        Scenario("held-c1000", "1,000 callers against an upstream answering after 5 s, pinned", 1000,
                 "openai/dall-e-3", fake_args=("--delay-ms", "5000"), duration_s=20, timeout_s=40, rounds=1),
        Scenario("held-10000", "10,000 concurrent requests held 30 s by the upstream", 10_000,
                 "openai/dall-e-3", fake_args=("--delay-ms", "30000"), duration_s=70, timeout_s=120, rounds=1,
                 pinned=False),
        Scenario("edit-4mb-c8", "edit: a 4 MB PNG uploaded (multipart), concurrency 8", 8,
                 "openai/gpt-image-1", upload_bytes=4_000_000),
    )
}  # fmt: skip


# --- process measurements (/proc)


# warm_every_worker: calls at once in its first round (doubled each round), rounds at most, and the
# RSS gap (MB) that marks a worker that has not yet made its first call (the vocabulary is ~48 MB)
WARM_ROUND, WARM_ROUNDS, WARM_GAP_MB = 64, 4, 24


def placed(pin: bool, cpu: int) -> list[str]:
    """The command prefix that runs a child on `cpu` when pinned, else on every CPU."""
    return ["taskset", "-c", str(cpu) if pin else EVERY_CPU]


def tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
            except (OSError, ValueError):
                continue
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total / CLK_TCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        except (OSError, ValueError):
            continue
    return total / 1024


def parts(pids: list[int]) -> dict[str, list[int]]:
    """The gateway's processes by what they are: Envoy, the workers, the supervisor."""
    grouped: dict[str, list[int]] = {}
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        program = command.split(b"\0")[0]
        serves = b"runtime.server" in command or b"bench.floor" in command
        part = "envoy" if b"envoy" in program else "workers" if serves else "supervisor"
        grouped.setdefault(part, []).append(pid)
    return grouped


class PeakRss(threading.Thread):
    """Peak RSS of a process tree (and of each of its parts, see `parts`), sampled every 100 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_mb = 0.0
        self.peak_by_part: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        pids = tree(self.pid)
        grouped = parts(pids)
        while not self._halt.wait(0.1):
            if len(pids) < 3:
                pids = tree(self.pid)
                grouped = parts(pids)
            self.peak_mb = max(self.peak_mb, rss_mb(pids))
            for part, members in grouped.items():
                self.peak_by_part[part] = max(self.peak_by_part.get(part, 0.0), rss_mb(members))

    def stop(self) -> float:
        self._halt.set()
        self.join(2)
        return self.peak_mb


# --- load


@dataclass(frozen=True)
class Body:
    data: bytes
    content_type: str = "application/json"


def noise_png(approx_bytes: int) -> bytes:
    """A PNG of random pixels (which do not compress) of about `approx_bytes`."""
    import io

    from PIL import Image

    side = int((approx_bytes / 3) ** 0.5)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        out, format="PNG", compress_level=1
    )
    return out.getvalue()


def edit_form(fields: dict[str, Any], image: bytes) -> Body:
    boundary = "mgbench7d1f0c"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="in.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image
        + b"\r\n"
    )
    return Body(b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")


def wrk(
    url: str, key: str, body: Body, concurrency: int, duration: int, timeout: int, pin: bool
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("wb", suffix=".body", delete=False) as f:
        f.write(body.data)
    command = ["wrk", "-t", "2" if concurrency > 1 else "1", "-c", str(concurrency), "-d", f"{duration}s",
               "--timeout", f"{timeout}s", "-s", str(HERE / "wrk_post.lua"),
               "-H", f"Authorization: Bearer {key}", url]  # fmt: skip
    run = subprocess.run(
        [*placed(pin, 0), *command],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_BODY_FILE": f.name, "BENCH_CONTENT_TYPE": body.content_type},
        timeout=duration + 60,
    )
    os.unlink(f.name)
    line = next((x for x in run.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {run.stdout[-500:]} {run.stderr[-500:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(raw[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": errors,
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def one_call(url: str, key: str, body: Body, timeout: int) -> None:
    """One request, waited for to the end of its answer."""
    import urllib.request

    request = urllib.request.Request(
        url, body.data, {"Authorization": f"Bearer {key}", "Content-Type": body.content_type}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def warm_every_worker(url: str, key: str, body: Body, timeout: int, workers: list[int]) -> float:
    """The workers' idle RSS (MB) once every worker has served a call, so that what a worker loads
    once, on its first call (the prompt tokenizer's ~48 MB vocabulary), is in the idle figure rather
    than counted as memory held per call. A call reaches one worker: workers share the gRPC port,
    and the kernel picks one per edge connection. So, while one worker is much smaller than the
    largest, calls go in rounds of WARM_ROUND at once: more than an edge connection's streams (16)
    per Envoy thread, so they open several connections, which land on every worker in practice.
    Envoy keeps those connections for the next round, so a round that missed a worker is followed
    by one twice as large, which needs new ones. What those calls leave in the workers then counts
    as idle (~4 MB after one round: a few KB per call of a 1,000-call scenario, less than the ~50 KB
    the vocabulary would otherwise add)."""
    for round_ in range(WARM_ROUNDS):
        sizes = [rss_mb([pid]) for pid in workers]
        if len(sizes) < 2 or min(sizes) > max(sizes) - WARM_GAP_MB:
            return sum(sizes)
        calls = [
            threading.Thread(target=one_call, args=(url, key, body, timeout))
            for _ in range(WARM_ROUND << round_)
        ]
        for call in calls:
            call.start()
        for call in calls:
            call.join()
    print("warning: a worker is still much smaller than the others after warming", file=sys.stderr)
    return rss_mb(workers)


def where_time_went(lines: list[str]) -> dict[str, float]:
    """From the gateway's request log lines: how long calls waited between the edge and a worker
    (`edge_wait_ms`), and how long the worker took beyond the provider call (latency minus upstream
    latency), p50 and p99. The rest of the added latency is outside both: the edge's and the
    caller's side of the connection."""
    waits, own = [], []
    for line in lines:
        if not line.startswith("{") or '"mg.request"' not in line:
            continue
        record = json.loads(line)
        if record.get("edge_wait_ms") is not None:
            waits.append(record["edge_wait_ms"])
        if record.get("upstream_latency_ms") is not None:
            own.append(record["latency_ms"] - record["upstream_latency_ms"])
    found: dict[str, float] = {}
    for name, values in (("edge_wait", waits), ("worker_own", own)):
        if len(values) > 1:
            cuts = statistics.quantiles(values, n=100)
            found[f"{name}_p50_ms"], found[f"{name}_p99_ms"] = round(cuts[49], 1), round(cuts[98], 1)
    return found


class Fake:
    def __init__(self, port: int, args: tuple[str, ...], pin: bool) -> None:
        command = [
            sys.executable,
            str(HERE / "fake_upstream.py"),
            "--port",
            str(port),
            "--api-key",
            UPSTREAM_KEY,
            *args,
        ]
        self.process = subprocess.Popen(
            [*placed(pin, 0), *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("fake upstream did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def measure(
    target: str, scenario: Scenario, base: str, key: str, gateway: GatewayProcess | None, upload: bytes
) -> dict[str, Any]:
    gateway_pid = gateway.process.pid if gateway is not None and gateway.process is not None else None
    model = scenario.model if target != "direct" else scenario.model.split("/", 1)[1]
    fields = {
        "model": model,
        "prompt": "a watercolor fox in a snowy forest",
        "n": scenario.n,
        "size": "1024x1024",
    }
    if scenario.upload_bytes:
        url, body = base + "/v1/images/edits", edit_form(fields, upload)
    else:
        url, body = base + "/v1/images/generations", Body(json.dumps(fields).encode())
    duration = scenario.duration_s or int(os.environ.get("BENCH_DURATION", "8"))
    if scenario.concurrency <= 64:
        wrk(url, key, body, scenario.concurrency, 2, scenario.timeout_s, scenario.pin)  # warm-up
    elif gateway_pid:
        one_call(url, key, body, scenario.timeout_s)
    pids = tree(gateway_pid) if gateway_pid else []
    members_of = parts(pids)
    idle_parts = {part: rss_mb(members) for part, members in members_of.items()}
    if scenario.concurrency > 64 and "workers" in members_of:
        idle_parts["workers"] = warm_every_worker(url, key, body, scenario.timeout_s, members_of["workers"])
    idle_mb = sum(idle_parts.values()) if pids else None
    peak = PeakRss(gateway_pid) if gateway_pid else None
    if peak:
        peak.start()
    cpu_before = cpu_s(pids)
    lines_before = len(gateway.output) if gateway is not None else 0
    result = wrk(url, key, body, scenario.concurrency, duration, scenario.timeout_s, scenario.pin)
    if gateway is not None:
        result.update(where_time_went(gateway.output[lines_before:]))
    if peak:
        result["peak_rss_mb"] = round(peak.stop(), 1)
        result["idle_rss_mb"] = round(idle_mb or 0.0, 1)
        result["peak_rss_mb_by_part"] = {part: round(mb, 1) for part, mb in peak.peak_by_part.items()}
        result["idle_rss_mb_by_part"] = {part: round(mb, 1) for part, mb in idle_parts.items()}
        result["cpu_ms_per_request"] = round(
            (cpu_s(pids) - cpu_before) * 1000 / max(1, result["requests"]), 3
        )
    return result


def start_gateway(upstream_port: int, pin: bool) -> GatewayProcess:
    env = {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "MG_DEFAULT_RPM": "100000000",
    }
    # pinned: one core, so one worker and one Envoy thread; else the defaults (one per core)
    workers = "1" if pin else "0"
    env.update(MG_WORKERS=workers, MG_ENVOY_CONCURRENCY=workers)
    gateway = GatewayProcess(Path(tempfile.mkdtemp(prefix="mg-bench-")), env)
    return gateway.start(command_prefix=placed(pin, 1))


def start_floor(upstream_port: int, pin: bool) -> GatewayProcess:
    """The design's floor (floor.py) pinned or placed as the gateway is."""
    floor = floor_module.floor_process(
        Path(tempfile.mkdtemp(prefix="mg-floor-")),
        f"http://127.0.0.1:{upstream_port}/v1",
        UPSTREAM_KEY,
        {"MG_ENVOY_CONCURRENCY": "1" if pin else "0"},
    )
    return floor.start(command_prefix=placed(pin, 1))


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk (make bench does this)", file=sys.stderr)
        return 1
    if PIN:  # this process reads the gateway's log lines: keep it off the gateway's core too
        os.sched_setaffinity(0, {0})
    names = os.environ.get("BENCH_SCENARIOS", ",".join([*SCENARIOS, streamed.NAME])).split(",")
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    stream_result = None
    if streamed.NAME in names:
        names.remove(streamed.NAME)
        stream_result = streamed.run(int(os.environ.get("BENCH_DURATION", "8")), rounds, placed(False, 0))
        print(f"{streamed.NAME}: {json.dumps(stream_result)}", file=sys.stderr, flush=True)
    upstream_port = free_port()
    # idle RSS of each gateway configuration started: "pinned" (one worker) and/or "defaults"
    report: dict[str, Any] = {"pinned": PIN, "idle_rss_mb": {}, "scenarios": {}}
    for name in names:
        scenario = SCENARIOS[name]
        fake = Fake(upstream_port, scenario.fake_args, scenario.pin)
        upload = noise_png(scenario.upload_bytes) if scenario.upload_bytes else b""
        # A fresh gateway per scenario: Python keeps memory it once used, so a peak RSS measured
        # after another scenario would partly be that scenario's.
        gateway = start_gateway(upstream_port, scenario.pin)
        assert gateway.process is not None
        floor = start_floor(upstream_port, scenario.pin) if FLOOR and not scenario.upload_bytes else None
        served_by = {"mg": gateway, "floor": floor}
        targets = ["mg", "direct", *(["floor"] if floor else [])]
        cells: dict[str, list[dict[str, Any]]] = {target: [] for target in targets}
        try:
            time.sleep(2)
            # a project of its own: the dev project has a spend cap the benchmark would reach
            bench_key = gateway.new_key(f"bench-{name}")
            configuration = "pinned" if scenario.pin else "defaults"
            if configuration not in report["idle_rss_mb"]:
                report["idle_rss_mb"][configuration] = round(rss_mb(tree(gateway.process.pid)), 1)
            for round_ in range(scenario.rounds or rounds):
                for target in targets if round_ % 2 == 0 else targets[::-1]:
                    server = served_by.get(target)
                    base = server.http_url if server else f"http://127.0.0.1:{upstream_port}"
                    key = bench_key if target == "mg" else UPSTREAM_KEY
                    cells[target].append(measure(target, scenario, base, key, server, upload))
        finally:
            gateway.stop()
            if floor is not None:
                floor.stop()
            fake.stop()
        report["scenarios"][name] = summarize(scenario, cells)
        print(f"{name}: {json.dumps(report['scenarios'][name])}", file=sys.stderr, flush=True)
    if stream_result is not None:
        report["streamed"] = stream_result
    out = Path(os.environ.get("BENCH_OUT", ROOT / ".mg" / "bench.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if report["scenarios"]:
        print(table(report))
    if stream_result is not None:
        print("\n" + streamed.table(stream_result))
    print(f"\nJSON: {out}")
    return 0


def summarize(scenario: Scenario, cells: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def median(target: str, key: str) -> float:
        values = [c[key] for c in cells[target] if c.get(key) is not None]
        return round(statistics.median(values), 3) if values else 0.0

    def gateway(target: str) -> dict[str, Any]:
        return {
            **{k: median(target, k) for k in ("rps", "p50_ms", "p99_ms", "errors")},
            "cpu_ms_per_request": median(target, "cpu_ms_per_request"),
            "peak_rss_mb": median(target, "peak_rss_mb"),
            **{
                f"{part}_{quantile}_ms": median(target, f"{part}_{quantile}_ms")
                for part in ("edge_wait", "worker_own")
                for quantile in ("p50", "p99")
            },
        }

    def held(target: str) -> dict[str, Any]:
        if not scenario.name.startswith("held"):
            return {"kb_per_call_in_flight": None, "kb_per_call_in_flight_by_part": None}
        kb = (median(target, "peak_rss_mb") - median(target, "idle_rss_mb")) * 1024 / scenario.concurrency
        return {
            "kb_per_call_in_flight": round(kb, 1),
            "kb_per_call_in_flight_by_part": per_call_by_part(cells[target], scenario.concurrency),
        }

    mg = gateway("mg")
    direct = {k: median("direct", k) for k in ("rps", "p50_ms", "p99_ms", "errors")}
    summary = {
        "description": scenario.description,
        "mg": mg,
        "direct": direct,
        "rps_ratio": round(mg["rps"] / direct["rps"], 3) if direct["rps"] else None,
        **held("mg"),
        "added_p50_ms": round(mg["p50_ms"] - direct["p50_ms"], 3),
        "p50_ratio": round(mg["p50_ms"] / direct["p50_ms"], 3) if direct["p50_ms"] else None,
        "cells": cells,
    }
    if cells.get("floor"):
        floor = gateway("floor")
        added = round(floor["p50_ms"] - direct["p50_ms"], 3)
        summary["floor"] = {**floor, **held("floor"), "added_p50_ms": added}
    return summary


def per_call_by_part(cells: list[dict[str, Any]], concurrency: int) -> dict[str, float]:
    """KB each call in flight holds in Envoy, in the workers and in the supervisor (medians)."""
    found: dict[str, list[float]] = {}
    for cell in cells:
        idle = cell.get("idle_rss_mb_by_part", {})
        for part, peak_mb in cell.get("peak_rss_mb_by_part", {}).items():
            found.setdefault(part, []).append((peak_mb - idle.get(part, 0.0)) * 1024 / concurrency)
    return {part: round(statistics.median(values), 1) for part, values in found.items()}


def table(report: dict[str, Any]) -> str:
    placement = "pinned: gateway on CPU 1, one worker" if report["pinned"] else "unpinned, defaults"
    idle = ", ".join(f"{mb} MB ({configuration})" for configuration, mb in report["idle_rss_mb"].items())
    unpinned = [name for name in report["scenarios"] if report["pinned"] and not SCENARIOS[name].pinned]
    lines = [
        f"mg benchmark ({placement}"
        + (f"; {', '.join(unpinned)} unpinned on the defaults" if unpinned else "")
        + f"); idle RSS {idle}",
        "",
        "| scenario | mg RPS | direct RPS | ratio | mg p50 / p99 ms | direct p50 / p99 ms | added p50 ms "
        "| errors | CPU ms/req | peak RSS MB | KB per call in flight | edge wait p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["scenarios"].items():
        mg, direct = s["mg"], s["direct"]
        lines.append(
            f"| {name} | {mg['rps']} | {direct['rps']} | {s['rps_ratio']} "
            f"| {mg['p50_ms']} / {mg['p99_ms']} | "
            f"{direct['p50_ms']} / {direct['p99_ms']} | {s['added_p50_ms']} | {mg['errors']:g} | "
            f"{mg['cpu_ms_per_request']} | {mg['peak_rss_mb']} | {in_flight(s)} "
            f"| {mg['edge_wait_p50_ms']} / {mg['edge_wait_p99_ms']} |"
        )
    floors = {name: s for name, s in report["scenarios"].items() if "floor" in s}
    if floors:
        lines += [
            "",
            "The design's floor (floor.py: the same Envoy before a bare grpc.aio relay), beside mg:",
            "",
            "| scenario | floor RPS | added p50 ms: floor / mg | CPU ms/req: floor / mg "
            "| KB per call in flight: floor / mg | errors: floor |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in floors.items():
            floor, mg = s["floor"], s["mg"]
            lines.append(
                f"| {name} | {floor['rps']} | {floor['added_p50_ms']} / {s['added_p50_ms']} "
                f"| {floor['cpu_ms_per_request']} / {mg['cpu_ms_per_request']} "
                f"| {in_flight(floor)} / {in_flight(s)} | {floor['errors']:g} |"
            )
    return "\n".join(lines)


def in_flight(summary: dict[str, Any]) -> str:
    total = summary["kb_per_call_in_flight"]
    if total is None:
        return ""
    by_part = summary.get("kb_per_call_in_flight_by_part") or {}
    shown = ", ".join(f"{part} {kb}" for part, kb in by_part.items() if part != "supervisor")
    return f"{total} ({shown})" if shown else str(total)


if __name__ == "__main__":
    sys.exit(main())
