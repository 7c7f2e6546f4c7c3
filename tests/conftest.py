from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import openai
import pytest
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from tests.support.gateway import GatewayProcess
from tests.support.sdk import close_clients

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The real gateway on its embedded defaults (own ports and data dir)."""
    process = GatewayProcess(tmp_path_factory.mktemp("gateway")).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    """The official OpenAI SDK pointed at the gateway's REST edge (Envoy)."""
    with openai.OpenAI(
        base_url=f"{gateway.http_url}/v1", api_key=gateway.key, max_retries=0, timeout=60
    ) as sdk:
        yield sdk


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    close_clients()


@pytest.fixture(scope="session")
def grpc_stub(gateway: GatewayProcess) -> Iterator[pb_grpc.ImageGenerationStub]:
    options = [("grpc.max_receive_message_length", 128 * MIB), ("grpc.max_send_message_length", 128 * MIB)]
    with grpc.insecure_channel(gateway.grpc_target, options=options) as channel:
        yield pb_grpc.ImageGenerationStub(channel)


@pytest.fixture(scope="session")
def openai_schema() -> dict[str, object]:
    """The official OpenAI Images schema (copied from openai/openai-openapi; see its $comment)."""
    return dict(json.loads(Path(__file__).with_name("openai-images-schema.json").read_text()))
