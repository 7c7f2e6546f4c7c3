"""Liveness and readiness (GET /healthz, /readyz), and gRPC health kept in step with the store.

Readiness fails (503) when the store cannot serve: it does not answer or cannot write (its disk
full), or a reservation's release is still waiting to be written. The `files` check
(hosted files cannot be written: the data dir's disk is full) is reported but does not fail
readiness: b64 answers need no file, and a balancer that took the gateway out would stop them too.
Neither does the `providers` check (the providers this worker's circuit breakers hold back): the
gateway still serves every other provider, and routes pass them over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service.api.servicer import SERVICE
from service.errors import MgError, Unavailable
from service.generation.capacity import Availability
from service.hosting.blobs import BlobStore
from service.stores.base import Store
from service.stores.retry import waiting_writes

log = logging.getLogger(__name__)
# gRPC health answers for the server as a whole ("") and for the image service by name.
SERVICE_NAMES = ("", SERVICE)


async def store_check(store: Store) -> str:
    try:
        await store.ping()
    except MgError as exc:
        return exc.message
    return waiting_writes()


class OperationsServicer(pb_grpc.OperationsServicer):
    def __init__(self, store: Store, blobs: BlobStore, available: Availability) -> None:
        self._store = store
        self._blobs = blobs
        self._available = available

    async def Liveness(self, request: pb.HealthRequest, context: Any) -> pb.HealthStatus:
        return pb.HealthStatus(status="ok")

    async def Readiness(self, request: pb.HealthRequest, context: Any) -> pb.HealthStatus:
        checks = {
            "store": await store_check(self._store),
            "files": await self._blobs.check(),
            "providers": self._available.check(),
        }
        if checks["store"] != "ok":
            raise Unavailable("Not ready: " + "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"))
        return pb.HealthStatus(status="ready", checks=checks)


async def follow_store_health(
    store: Store, servicer: health.aio.HealthServicer, interval_s: float = 5.0
) -> None:
    """gRPC health checking says NOT_SERVING while the store cannot be reached."""
    serving = True
    while True:
        healthy = await store_check(store) == "ok"
        if healthy != serving:
            serving = healthy
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if healthy
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            log.warning("store %s; gRPC health is now %s", "back" if healthy else "unreachable", status)
            for name in SERVICE_NAMES:
                await servicer.set(name, status)
        await asyncio.sleep(interval_s)


def add_operations(server: grpc.aio.Server, store: Store, blobs: BlobStore, available: Availability) -> None:
    pb_grpc.add_OperationsServicer_to_server(OperationsServicer(store, blobs, available), server)
