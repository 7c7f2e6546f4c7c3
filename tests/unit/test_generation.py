"""Fan-out and partial success, with a scripted provider (the local one cannot fail on demand)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import load_catalog
from service.errors import ContentPolicyViolation, Internal, UpstreamError, UpstreamTimeout
from service.generation.fanout import Generator, plan_calls
from service.generation.validation import validate
from service.providers.base import GeneratedImage, ImageCall, ImageCallResult, ProviderUsage, unsupported

CATALOG = load_catalog()


@dataclass
class ScriptedProvider:
    """Answers call k with script[k]: an exception to raise, or a number of images to return."""

    script: list[object]
    name: str = "local"
    calls: list[ImageCall] = field(default_factory=list)
    delay_s: float = 0

    async def generate(self, call: ImageCall) -> ImageCallResult:
        step = self.script[len(self.calls)]
        self.calls.append(call)
        await asyncio.sleep(self.delay_s)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, int)
        images = [GeneratedImage(bytes([call.first_index + i])) for i in range(step)]
        return ImageCallResult(images, usage=ProviderUsage(input_tokens=3, output_tokens=10))

    async def aclose(self) -> None:
        return None


def generation(n: int, model: str = "local/sketch"):
    return validate(pb.GenerateImagesRequest(model=model, prompt="p", n=n), CATALOG.resolve(model))


def run(provider: ScriptedProvider, n: int, timeout_s: float = 5):
    return asyncio.run(
        Generator({"local": provider}, fanout_concurrency=2).generate(generation(n), timeout_s)
    )


def test_plan_splits_n_by_the_per_call_maximum() -> None:
    calls = plan_calls(generation(7), deadline=0.0)  # local/sketch: 4 per call
    assert [(c.n, c.first_index) for c in calls] == [(4, 0), (3, 4)]


def test_results_are_concatenated_in_call_order_and_usage_summed() -> None:
    result = run(ScriptedProvider([4, 3]), 7)
    assert [image.data for image in result.images] == [bytes([i]) for i in range(7)]
    assert result.summary.usage == ProviderUsage(input_tokens=6, output_tokens=20, input_image_tokens=None)


def test_partial_success_returns_what_arrived() -> None:
    result = run(ScriptedProvider([4, UpstreamError("boom")]), 8)
    assert len(result.images) == 4 and result.summary.failed_calls == 1


def test_total_failure_raises_the_providers_error() -> None:
    with pytest.raises(ContentPolicyViolation):
        run(ScriptedProvider([ContentPolicyViolation("no"), ContentPolicyViolation("no")]), 8)


def test_an_empty_answer_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        run(ScriptedProvider([0]), 1)


def test_unexpected_adapter_exceptions_become_internal_errors() -> None:
    with pytest.raises(Internal):
        run(ScriptedProvider([KeyError("bug")]), 1)


def test_the_deadline_is_a_504() -> None:
    with pytest.raises(UpstreamTimeout):
        run(ScriptedProvider([1], delay_s=2), 1, timeout_s=0.1)


def test_a_warning_every_call_of_a_fan_out_gives_is_reported_once() -> None:
    @dataclass
    class SameWarningEachCall:
        calls: int = 0

        name: str = "local"

        async def generate(self, call: ImageCall) -> ImageCallResult:
            self.calls += 1
            images = [GeneratedImage(b"x") for _ in range(call.n)]
            return ImageCallResult(images, warnings=[unsupported("style", "local has none")])

        async def aclose(self) -> None:
            return None

    provider = SameWarningEachCall()
    result = asyncio.run(Generator({"local": provider}, fanout_concurrency=2).generate(generation(8), 5))
    assert provider.calls == 2 and result.summary.warnings == (unsupported("style", "local has none"),)
