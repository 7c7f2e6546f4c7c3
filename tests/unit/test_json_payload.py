"""The provider-answer parser gives exactly what orjson gives, with long strings or without."""

from __future__ import annotations

import json
import os
from typing import Any

import orjson
import pybase64
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.providers import json_payload
from service.providers.json_payload import LONG_STRING, loads

BASE64 = pybase64.b64encode(os.urandom(LONG_STRING)).decode()  # a little longer than LONG_STRING


def same_as_orjson(body: bytes) -> Any:
    expected = orjson.loads(body)
    parsed = loads(body)
    assert parsed == expected
    assert type(parsed) is type(expected)
    return parsed


def test_an_image_answer_as_the_providers_send_it() -> None:
    for dump in (orjson.dumps, lambda v: json.dumps(v, indent=2).encode()):  # OpenAI pretty-prints
        body = dump({"created": 1, "data": [{"b64_json": BASE64, "revised_prompt": "a cat"}]})
        assert same_as_orjson(body)["data"][0]["b64_json"] == BASE64


@pytest.mark.parametrize(
    "value",
    [
        {"data": [{"b64_json": BASE64}, {"b64_json": BASE64[::-1]}]},
        {"a": 'x"y', "b64": BASE64},  # an escaped quote before the long string
        {"a": "x\\", "b64": BASE64},  # a string ending in an escaped backslash
        {"a": "x\\\\\\", "b64": BASE64, "c": '\\"'},
    ],
)
def test_the_long_strings_are_cut_out_of_what_orjson_parses(
    value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_loads = orjson.loads

    def recording_loads(body: bytes) -> Any:
        seen.append(len(body))
        return real_loads(body)

    monkeypatch.setattr("service.providers.json_payload.orjson.loads", recording_loads)
    assert loads(orjson.dumps(value)) == value
    assert seen and max(seen) < 200


@pytest.mark.parametrize(
    "value",
    [
        {"b64": BASE64 + "\\" + BASE64},  # escapes inside: parsed by orjson in place
        {"b64": BASE64 + '"' + BASE64},
        {"text": "é" * LONG_STRING},  # not ASCII: parsed by orjson in place
        {BASE64: 1},  # a long key
        [BASE64, [BASE64, {"k": [BASE64]}], 1.5, None, True],
        BASE64,
        {"nul": "\x00", "b64": BASE64},  # a real \u0000 escape: orjson parses it all
        {"stand_in": "\x00mg-long-string:0", "b64": BASE64},
        {"b64": BASE64[: LONG_STRING - 1]},  # one short of long
        {"many": ["x"] * json_payload.MAX_QUOTES, "b64": BASE64},  # past the walk's limit
        {"quotes": '"' * json_payload.MAX_QUOTES, "b64": BASE64},
    ],
)
def test_edge_cases(value: Any) -> None:
    same_as_orjson(orjson.dumps(value))


@pytest.mark.parametrize(
    "body",
    [
        b'{"b64": "' + BASE64.encode(),  # unterminated
        b'{"b64": "' + BASE64.encode() + b'"',  # no closing brace
        b'{"b64" "' + BASE64.encode() + b'"}',  # no colon
        b'{"b64": "' + BASE64.encode() + b'"} trailing',
        b'{"b64": x"' + BASE64.encode() + b'"}',
        b'["' + BASE64.encode() + b'" "' + BASE64.encode() + b'"]',
        b'{"b64": "' + "é".encode() * LONG_STRING + b'\xff"}',  # not UTF-8
        b"",
    ],
)
def test_what_orjson_refuses_is_refused(body: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    with pytest.raises(ValueError):
        loads(body)


# Documents with strings on both sides of LONG_STRING, including quotes, backslashes and non-ASCII.
_short_text = st.text(alphabet=st.sampled_from('ab"\\/é\x00\n '), max_size=8)
_long_text = st.builds(
    lambda head, tail, cut: BASE64[:cut] + head + BASE64 + tail,
    _short_text,
    _short_text,
    st.integers(0, 64),
)
_text = st.one_of(_short_text, _long_text, st.just(BASE64))


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(_text, children, max_size=4))


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), _text), _containers, max_leaves=12
)


@settings(max_examples=200, deadline=None)
@given(_json, st.booleans())
def test_generated_documents(value: Any, indent: bool) -> None:
    body = json.dumps(value, indent=2).encode() if indent else orjson.dumps(value)
    same_as_orjson(body)
