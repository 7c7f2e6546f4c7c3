"""A gRPC server with the gateway's real request-context, event-stream and error-rendering interceptors, whose
GenerateImages raises the domain error named by the prompt ("RateLimited", ...), or sleeps for
"sleep:<seconds>". It lets the error table be driven through real Envoy without enforcement that
produces each error existing yet.

    python -m tests.support.error_server --port N
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service import errors
from service.api.interceptors.error_rendering import ErrorRenderingInterceptor
from service.api.interceptors.event_stream import EventStreamInterceptor
from service.api.interceptors.request_context import RequestContextInterceptor
from service.api.servicer import add_image_generation

BY_NAME = {error.__name__: error for error in errors.ALL_ERRORS}


class RaisingServicer(pb_grpc.ImageGenerationServicer):
    async def GenerateImages(self, request: pb.GenerateImagesRequest, context: Any) -> pb.ImagesResponse:
        if request.prompt.startswith("sleep:"):
            await asyncio.sleep(float(request.prompt.removeprefix("sleep:")))
            return pb.ImagesResponse(created=1)
        error = BY_NAME[request.prompt]
        retry_after = 7 if error is errors.RateLimited else None
        raise error(
            f"simulated {request.prompt} for the error table",
            param=request.user or None,
            retry_after_s=retry_after,
        )

    # The REST binding and the gRPC stream run the same call (written by the event stream interceptor).
    GenerateImagesStream = GenerateImages


async def main(port: int) -> None:
    server = grpc.aio.server(
        interceptors=[
            RequestContextInterceptor(max_duration_s=300),
            EventStreamInterceptor(),
            ErrorRenderingInterceptor(),
        ]
    )
    add_image_generation(RaisingServicer(), server, 1 << 20)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
