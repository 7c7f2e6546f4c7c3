from __future__ import annotations

import pytest

from service.admin import AdminError, parse_since, usd_to_micros
from service.catalog.catalog import usd
from service.keys import hash_key, looks_like_key, new_key
from service.stores.gcra import gcra


def test_new_keys_are_long_random_and_stored_as_hashes() -> None:
    token, record = new_key("proj_1")
    assert looks_like_key(token) and len(token) >= len("mg_live_") + 43
    assert record.key_hash == hash_key(token) != token
    assert token.startswith(record.prefix) and len(record.prefix) == 12
    assert new_key("proj_1")[0] != token


@pytest.mark.parametrize(
    "text", ["", "mg_live_", "mg_live_short", "sk-" + "a" * 48, "mg_live_" + "a" * 42 + "!"]
)
def test_malformed_keys_are_recognised(text: str) -> None:
    assert not looks_like_key(text)


def test_usd_amounts_become_integer_micros() -> None:
    assert usd_to_micros("12.5") == 12_500_000
    assert usd_to_micros("0.000001") == 1
    assert usd_to_micros("1000000000") == 10**15
    for bad in ("-1", "0.0000001", "ten", "NaN", "Infinity", "-inf", "1e309", "1000000000.000001", ""):
        with pytest.raises(AdminError):
            usd_to_micros(bad)
    assert usd(2_500) == "$0.0025" and usd(1_000_000) == "$1"


def test_since_accepts_relative_and_iso_times() -> None:
    assert parse_since("24h", now=100_000) == 100_000 - 86_400
    assert parse_since("2026-11-01T00:00:00+00:00") == 1793491200
    with pytest.raises(AdminError):
        parse_since("last tuesday")


def test_gcra_spaces_requests_after_the_burst() -> None:
    decision, tat = gcra(None, 0.0, limit=2)
    assert decision.allowed and decision.remaining == 1
    decision, tat = gcra(tat, 0.0, limit=2)
    assert decision.allowed and decision.remaining == 0
    refused, unchanged = gcra(tat, 0.0, limit=2)
    assert not refused.allowed and unchanged is None and refused.retry_after_s == pytest.approx(30)
    assert gcra(tat, 30.0, limit=2)[0].allowed


def test_token_billed_estimates_cover_the_prompt_and_a_reference_image() -> None:
    from dataclasses import replace

    from mg.v1 import image_generation_pb2 as pb

    from service.catalog.catalog import load_catalog
    from service.generation.pricing import cost_micros, estimate_micros
    from service.generation.reference_images import ReferenceImage
    from service.generation.validation import validate
    from service.providers.base import ProviderUsage

    catalog = load_catalog()
    request = validate(
        pb.GenerateImagesRequest(model="openai/gpt-image-1", prompt="x", quality="high"),
        catalog.resolve("openai/gpt-image-1"),
    )
    plain = estimate_micros(request, prompt_tokens=100)
    # one high 1024x1024 image's 4,160 output tokens at $40/M + (100 + 64 margin) prompt tokens at $5/M
    assert plain == 4_160 * 40 + 164 * 5
    edit = estimate_micros(
        replace(request, reference=ReferenceImage(b"", "image/png", 8, 8)), prompt_tokens=100
    )
    assert edit == plain + 65_000  # 6,500 image tokens at $10/M
    usage = ProviderUsage(input_tokens=1_100, output_tokens=4_160, input_image_tokens=1_000)
    assert cost_micros(request, 1, usage) == 100 * 5 + 1_000 * 10 + 4_160 * 40  # micro-dollars
    assert cost_micros(request, 1, usage) <= edit
