"""The design's floor, for `make bench`: Envoy on mg's own edge configuration in front of one bare
grpc.aio process whose GenerateImagesJson makes one HTTP call to the upstream and relays its answer.

Nothing else runs per call: no key lookup, enforcement, store, pipeline, log line or metric. It is
what any gateway built to the design (a grpc.aio worker behind Envoy's gRPC-JSON transcoder, an
aiohttp client to the provider) pays before it does anything, so `BENCH_FLOOR=1 make bench` shows
per scenario how much of mg's added latency, CPU and memory per call is the design's and how much
is mg's own. Only the unstreamed generation route is served (the scenarios that use it).

    python -m tests.bench.floor --upstream http://127.0.0.1:PORT/v1 --api-key KEY
    (ports, data directory and Envoy threads from the same MG_* settings as `mg serve`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
from google.api import httpbody_pb2
from mg.v1 import image_generation_pb2 as pb

from service.config import Settings, load_settings
from service.runtime.edge import EnvoyProcess, write_edge_files
from service.runtime.server import grpc_options, tune_collector
from service.runtime.supervisor import MALLOC_TUNING
from tests.support.gateway import GatewayProcess

READY_LINE = "floor is ready"
METHOD = "GenerateImagesJson"
ROOT = Path(__file__).resolve().parents[2]


def floor_process(data_dir: Path, upstream: str, api_key: str, env: dict[str, str]) -> GatewayProcess:
    """The floor as a child process to `.start()`, with `env` over the MG_* settings of a gateway,
    and the malloc settings mg's supervisor gives its workers (runtime tuning, not mg's work)."""
    command = ("-m", "tests.bench.floor", "--upstream", upstream, "--api-key", api_key)
    return GatewayProcess(
        data_dir, {**MALLOC_TUNING, **env}, command=command, ready_line=READY_LINE, cwd=ROOT
    )


def openai_body(request: pb.GenerateImagesRequest) -> bytes:
    """The OpenAI request for `request` (the model without its provider prefix)."""
    return json.dumps(
        {
            "model": request.model.split("/", 1)[-1],
            "prompt": request.prompt,
            "n": request.n or 1,
            "size": request.size or "1024x1024",
        }
    ).encode()


class Relay:
    """GenerateImagesJson as one upstream call: the caller's request out, the answer back as is."""

    def __init__(self, upstream: str, api_key: str) -> None:
        self._url = upstream.rstrip("/") + "/images/generations"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the event loop that serves
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def generate(
        self,
        request: pb.GenerateImagesRequest,
        context: grpc.aio.ServicerContext[pb.GenerateImagesRequest, httpbody_pb2.HttpBody],
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        body = openai_body(request)
        async with self.session().post(self._url, data=body, headers=self._headers) as response:
            data = await response.read()
        yield httpbody_pb2.HttpBody(content_type="application/json", data=data)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def serve(settings: Settings, relay: Relay) -> None:
    # Envoy first: forked once gRPC's threads run, its child could fail before it execs Envoy (mg's
    # supervisor, which starts Envoy, never runs gRPC).
    run_dir = settings.run_dir
    envoy = EnvoyProcess(settings, write_edge_files(settings, run_dir / "envoy"), run_dir / "envoy.log")
    envoy.claim_admin_socket()
    envoy.start()
    server = grpc.aio.server(options=grpc_options(settings, reuse_port=False))
    handler = grpc.unary_stream_rpc_method_handler(
        relay.generate,
        request_deserializer=pb.GenerateImagesRequest.FromString,
        response_serializer=httpbody_pb2.HttpBody.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("mg.v1.ImageGeneration", {METHOD: handler}),)
    )
    server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        if not await asyncio.to_thread(envoy.wait_ready, 30):
            raise SystemExit("Envoy did not become ready")
        tune_collector()  # the same collector settings as an mg worker
        print(READY_LINE, flush=True)
        await stopping.wait()
    finally:
        if envoy.process is not None:
            envoy.process.terminate()
            envoy.process.wait(10)
        await server.stop(1)
        await relay.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the OpenAI-shaped upstream's base URL (…/v1)")
    parser.add_argument("--api-key", required=True, help="the upstream's API key")
    args = parser.parse_args()
    settings = load_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(settings, Relay(args.upstream, args.api_key)))


if __name__ == "__main__":
    main()
