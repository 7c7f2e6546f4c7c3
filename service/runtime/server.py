"""One gRPC worker process: build the server, serve until SIGTERM, then drain.

`mg serve` runs one of these per core; they share the gRPC port with SO_REUSEPORT.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.admin_session import AdminSessions
from service.api.admin_servicer import AdminServicer, add_admin
from service.api.interceptors.admin_auth import AdminAuthInterceptor
from service.api.interceptors.auth import AuthInterceptor
from service.api.interceptors.error_rendering import ErrorRenderingInterceptor
from service.api.interceptors.event_stream import EventStreamInterceptor
from service.api.interceptors.idempotency import IdempotencyInterceptor
from service.api.interceptors.observe import ObserveInterceptor
from service.api.interceptors.rate_limit import RateLimitInterceptor
from service.api.interceptors.request_context import RequestContextInterceptor
from service.api.operations import SERVICE_NAMES, add_operations, follow_store_health
from service.api.servicer import ImageGenerationServicer, add_image_generation
from service.catalog.catalog import Catalog, catalog_for
from service.config import Settings, load_settings
from service.console.admin_check import AdminReadCheck
from service.console.files import ConsoleFiles
from service.console.servicer import ConsoleServicer, add_console
from service.generation.capacity import Availability, build_guards
from service.generation.fanout import Generator
from service.generation.pipeline import Pipeline
from service.generation.reference_addresses import parse_networks
from service.generation.reference_images import DecodeSlots, ReferenceLimits
from service.generation.spend import SpendLedger
from service.hosting.blobs import BlobStore, open_blob_store, sweep_forever
from service.hosting.thumbnails import Thumbnails
from service.hosting.urls import Hosting, signing_key
from service.providers.base import ImageProvider
from service.providers.registry import build_providers
from service.runtime.observability import configure_logging, watch_free_space
from service.stores import open_store
from service.stores.base import Store

log = logging.getLogger("mg.worker")


# More than the edge lets in at once (MG_ENVOY_MAX_CONNECTIONS, 10,000 on the defaults, each with at
# most 100 HTTP/2 streams) ever needs queued at one worker: the bound is Envoy's.
MAX_QUEUED_CALLS = 1_000_000


def grpc_options(settings: Settings, *, reuse_port: bool) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # Generations are long: keep idle client connections (Envoy's) open, answer their pings.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # A burst reaches a worker faster than its event loop takes calls in (one at a time); gRPC
        # queues the rest, and on its defaults refuses them at random past 1,000 queued (all past
        # 3,000) and drops those queued over 30 s: callers saw 499 CANCELLED. The edge's connection
        # limit and Envoy's heap bound how many can arrive; a queued call waits no longer than it
        # could have waited for its images.
        ("grpc.server.max_pending_requests", MAX_QUEUED_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", MAX_QUEUED_CALLS),
        ("grpc.server_max_unrequested_time_in_server", math.ceil(settings.max_duration_s)),
    ]


@dataclass(frozen=True)
class Worker:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    store: Store
    idempotency: IdempotencyInterceptor
    pipeline: Pipeline
    blobs: BlobStore
    providers: Mapping[str, ImageProvider]


def interceptors(
    settings: Settings,
    store: Store,
    catalog: Catalog,
    idempotency: IdempotencyInterceptor,
    admin_sessions: AdminSessions | None,
) -> list[grpc.aio.ServerInterceptor]:
    """What applies to every call, outermost first (DESIGN.md section 3). Idempotency comes right
    after auth: replays skip rate limits and spend, and only the call that owns a key runs the rest.
    The generation's own steps (model access, validation, inputs, spend) are the pipeline's. The
    admin API's calls pass admin auth instead of auth, and nothing after it applies to them."""
    return [
        RequestContextInterceptor(settings.max_duration_s),
        EventStreamInterceptor(),
        ErrorRenderingInterceptor(),
        ObserveInterceptor(settings.log_prompts, catalog),
        AdminAuthInterceptor(admin_sessions),
        AuthInterceptor(store),
        idempotency,
        RateLimitInterceptor(store, settings.default_rpm),
    ]


async def build_server(settings: Settings, *, reuse_port: bool = True) -> Worker:
    """A ready-to-start server bound to settings.grpc_port (0 picks a free port)."""
    catalog = catalog_for(settings)
    store = open_store(settings)
    providers = build_providers(settings, store)
    blobs = open_blob_store(settings)
    hosting = Hosting(blobs, signing_key(settings), settings.public_base_url, settings.url_ttl_s)
    guards = build_guards(store, {name: config.limits for name, config in settings.providers.items()})
    available = Availability(providers, guards)
    pipeline = Pipeline(
        catalog=catalog,
        configured_providers=frozenset(providers),
        reference_limits=ReferenceLimits(
            settings.reference_max_bytes,
            settings.reference_max_pixels,
            settings.reference_timeout_s,
            parse_networks(settings.reference_allow_networks),
            DecodeSlots(settings.reference_decode_concurrency),
            settings.max_request_bytes,
        ),
        generator=Generator(providers, settings.fanout_concurrency, guards),
        spend=SpendLedger(store, settings.reservation_lease_s, keep_prompts=settings.log_prompts),
        hosting=hosting,
        upstream_limit_s=settings.upstream_limit_s,
        max_duration_s=settings.max_duration_s,
        thumbnails=Thumbnails(blobs) if settings.keep_thumbnails else None,
    )
    servicer = ImageGenerationServicer(
        catalog=catalog, pipeline=pipeline, available_providers=available, hosting=hosting
    )
    idempotency = IdempotencyInterceptor(
        store, settings.idempotency_lease_s, settings.idempotency_retention_s, hosting
    )
    admin_sessions = AdminSessions.from_settings(settings)
    server = grpc.aio.server(
        interceptors=interceptors(settings, store, catalog, idempotency, admin_sessions),
        options=grpc_options(settings, reuse_port=reuse_port),
    )
    add_image_generation(servicer, server, settings.reference_max_bytes)
    add_operations(server, store, blobs, available)
    add_admin(server, AdminServicer(store, admin_sessions, settings.default_rpm, settings.public_url))
    add_console(
        ConsoleServicer(
            ConsoleFiles.load(thumbnails=settings.keep_thumbnails) if settings.console else None,
            Thumbnails(blobs) if settings.keep_thumbnails else None,
            AdminReadCheck(admin_sessions),
            catalog,
            available,
        ),
        server,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in SERVICE_NAMES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    return Worker(server, port, health_servicer, store, idempotency, pipeline, blobs, providers)


# Python's defaults (700, 10, 10) collect the youngest generation every 700 net allocations of
# container objects, a few calls' worth. Little of what a call allocates is cyclic garbage: it is
# freed by reference counting as the call ends, so rarer collections cost a few MB at most.
GC_THRESHOLDS = (50_000, 20, 100)


async def serve(settings: Settings, ready_fd: int | None = None) -> None:
    worker = await build_server(settings)
    await worker.server.start()
    tune_collector()
    log.info("worker %d serving gRPC on %s:%d", os.getpid(), settings.grpc_host, worker.port)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    sweeper = asyncio.create_task(sweep_forever(worker.blobs, settings.file_retention_s))
    health_follower = asyncio.create_task(follow_store_health(worker.store, worker.health))
    space_watch = asyncio.create_task(
        watch_free_space(settings.data_dir, settings.disk_free_warn_bytes, settings.files_keep_free_bytes)
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    orphan_watch = asyncio.create_task(_stop_when_orphaned(stopping))
    await stopping.wait()
    log.info("worker %d draining (up to %gs)", os.getpid(), settings.shutdown_grace_s)
    await worker.health.enter_graceful_shutdown()
    await worker.server.stop(settings.shutdown_grace_s)
    await worker.idempotency.drain(settings.shutdown_grace_s)
    await worker.pipeline.drain(settings.shutdown_grace_s)
    sweeper.cancel()
    orphan_watch.cancel()
    health_follower.cancel()
    space_watch.cancel()
    # After the drain (background completions use them): their kept-alive connections are closed
    # rather than left to the garbage collector, which logs each as an unclosed session error. One
    # that fails to close must not keep the store from closing.
    await asyncio.gather(
        *(provider.aclose() for provider in worker.providers.values()), return_exceptions=True
    )
    await worker.store.close()
    log.info("worker %d stopped", os.getpid())


def tune_collector() -> None:
    """What a worker made to start (modules, the catalog, the server) lives as long as it does: it
    is moved out of the cyclic collector's sight, so the collections made while calls are in flight
    no longer rescan it; and collections come less often (GC_THRESHOLDS). With 1,000 generations
    in flight on one core, the collector took 20 % of the worker's CPU before; with this, as little
    as with it switched off (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _stop_when_orphaned(stopping: asyncio.Event) -> None:
    """Drain and exit if `mg serve` dies (even by SIGKILL): a worker never outlives its gateway."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 (no event tells a process its parent died)
        await asyncio.sleep(1)
    log.warning("worker %d lost its supervisor; draining", os.getpid())
    stopping.set()


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    parser = argparse.ArgumentParser(description="one mg gRPC worker (started by `mg serve`)")
    parser.add_argument("--ready-fd", type=int, help="write 'ready' to this fd once serving")
    args = parser.parse_args()
    asyncio.run(serve(settings, args.ready_fd))


if __name__ == "__main__":
    main()
