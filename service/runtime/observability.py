"""Metrics and logs.

Metrics are Prometheus metrics in multiprocess mode: every worker writes its values to files in a
directory the supervisor gives it (PROMETHEUS_MULTIPROC_DIR), and the supervisor serves the sum of
all workers on MG_METRICS_PORT. Logs are JSON lines on stderr; each request gets exactly one line
(`request_log_fields`), with the key's prefix and never the key, provider credentials or image
bytes, and the prompt only when MG_LOG_PROMPTS is on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter, Gauge, Histogram

from service.data_dir import free_bytes, human_bytes
from service.runtime import metric_files

metric_files.install()  # before the first metric: see metric_files

log = logging.getLogger(__name__)

_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)

REQUESTS = Counter(
    "mg_requests_total", "Requests by method, model, provider, project and outcome code.",
    ["method", "model", "provider", "project", "code"],
)  # fmt: skip
LATENCY = Histogram(
    "mg_request_duration_seconds", "End-to-end request time.", ["method", "model"], buckets=_SECONDS
)
EDGE_WAIT = Histogram(
    "mg_edge_wait_seconds",
    "Time between the edge receiving a request and a worker taking it in (receiving its body included).",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_LATENCY = Histogram(
    "mg_upstream_duration_seconds", "Time spent in provider calls.", ["provider", "model"], buckets=_SECONDS
)
IMAGES = Counter("mg_images_total", "Images generated (delivered).", ["model", "provider", "project"])
# Integer micro-dollars, as the ledger counts them: float USD sums drift (0.018000000000000002).
SPEND = Counter("mg_spend_micro_usd_total", "Spend charged, in micro-dollars.", ["project", "model"])
IN_FLIGHT = Gauge(
    "mg_generations_in_flight",
    "Generations running now (including background ones).",
    multiprocess_mode="livesum",
)
IDEMPOTENT = Counter(
    "mg_idempotent_total", "Idempotent requests served without a new generation.", ["outcome"]
)
COST_ABOVE_ESTIMATE = Counter(
    "mg_cost_above_estimate_total",
    "Provider answers whose reported usage cost more than the request's bound (charged at the bound).",
    ["provider", "model"],
)
REJECTIONS = Counter("mg_rejections_total", "Requests refused by a limit.", ["reason"])
# Providers with limits configured (service/generation/capacity.py): whether a worker's circuit
# breaker keeps a provider's calls back (1 in any worker: the most recent state there), and the
# calls waiting for one of its max_in_flight slots.
CIRCUIT_OPEN = Gauge(
    "mg_circuit_open",
    "1 while a provider's circuit breaker is open (its calls are refused at once).",
    ["provider"],
    multiprocess_mode="livemax",
)
CREDENTIALS_REJECTED = Counter(
    "mg_credentials_rejected_total",
    "Keys of a provider with several that it rejected (each then taken out of use).",
    ["provider", "credential"],
)
UPSTREAM_QUEUED = Gauge(
    "mg_upstream_queued",
    "Calls waiting for one of a provider's max_in_flight slots.",
    ["provider"],
    multiprocess_mode="livesum",
)

REJECTION_REASONS = {"RATE_LIMITED": "rate_limit", "BUDGET_EXCEEDED": "budget"}
DATA_DIR_FREE = Gauge(
    "mg_data_dir_free_bytes",
    "Free bytes on the disk of MG_DATA_DIR (the SQLite store and hosted files).",
    multiprocess_mode="livemostrecent",
)

# How often the data dir's free space is measured, and how often a low-space warning is repeated.
FREE_SPACE_INTERVAL_S = 5.0
LOW_SPACE_REPEAT_S = 600.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `fields` given in `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": f"{_utc_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # orjson: a third of the stdlib's time for a request line; UTF-8 where json would escape.
        return orjson.dumps(line, default=str).decode()


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def record_charge(project: str, model: str, provider: str, images: int, cost_micros: int) -> None:
    """Called once per settled generation (also for ones that finished after their caller left)."""
    IMAGES.labels(model, provider, project).inc(images)
    SPEND.labels(project, model).inc(cost_micros)


async def watch_free_space(data_dir: Path, warn_below: int, keep_free: int) -> None:
    """Keep mg_data_dir_free_bytes current, and warn while the disk runs low (every worker
    measures; the metric shows the latest reading)."""
    warned_at: float | None = None
    while True:
        free = await asyncio.to_thread(free_bytes, data_dir)
        DATA_DIR_FREE.set(free)
        now = time.monotonic()
        if free >= warn_below:
            warned_at = None
        elif warned_at is None or now - warned_at >= LOW_SPACE_REPEAT_S:
            warned_at = now
            log.warning(
                "only %s free on the disk of the data dir %s: below %s hosted files are refused "
                "(507), and when it is full the store cannot write (503). Free space with "
                "`mg files sweep --older-than 1h` (deletes hosted images older than an hour), or "
                "give the disk more room",
                human_bytes(free),
                data_dir,
                human_bytes(keep_free),
            )
        await asyncio.sleep(FREE_SPACE_INTERVAL_S)


def configure_logging(level: str) -> None:
    # Fields no line prints, which every log record would otherwise look up.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
