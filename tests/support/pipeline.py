"""A generation pipeline on real parts (SQLite store, local blob directory, the given providers), for
tests that drive it in-process, without gRPC."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from ulid import ULID

from service.catalog.catalog import Catalog, load_catalog
from service.generation.fanout import Generator
from service.generation.pipeline import Caller, Pipeline
from service.generation.reference_images import ReferenceLimits
from service.generation.report import CallReport
from service.generation.spend import SpendLedger
from service.hosting.blobs import LocalBlobStore
from service.hosting.urls import Hosting
from service.providers.base import ImageProvider
from service.providers.local import LocalProvider
from service.stores.base import Project
from service.stores.sqlite import SqliteStore

CATALOG = load_catalog()


def build_pipeline(
    tmp_path: Path,
    providers: Mapping[str, ImageProvider] | None = None,
    *,
    catalog: Catalog = CATALOG,
    upstream_limit_s: float = 60.0,
    max_duration_s: float = 60.0,
    fanout_concurrency: int = 4,
) -> tuple[Pipeline, SqliteStore]:
    providers = providers or {"local": LocalProvider()}
    store = SqliteStore(tmp_path / "mg.sqlite3")
    pipeline = Pipeline(
        catalog=catalog,
        configured_providers=frozenset(providers),
        reference_limits=ReferenceLimits(1_000_000, 4_000_000, 5.0),
        generator=Generator(providers, fanout_concurrency),
        spend=SpendLedger(store, lease_s=30.0),
        hosting=Hosting(LocalBlobStore(tmp_path / "files"), b"key", "http://gateway", ttl_s=60),
        upstream_limit_s=upstream_limit_s,
        max_duration_s=max_duration_s,
    )
    return pipeline, store


def a_caller(project: Project, *, wait_s: float | None = 300.0, report: CallReport | None = None) -> Caller:
    now = time.monotonic()
    return Caller(
        project=project,
        key_id="key_1",
        request_id=str(ULID()),
        started=now,
        answer_by=None if wait_s is None else now + wait_s,
        report=report,
    )
