"""Provider answers as JSON, fast when they carry megabytes of base64 images.

orjson builds each string by checking it character by character: a 1.5 MB image answer cost 0.6 ms
of parsing, a sixth of the worker's CPU for that request. Base64 needs none of that work (ASCII, no
escapes). So strings of at least `LONG_STRING` characters with no escapes are cut out of the body
(found by jumping from quote to quote: outside strings JSON has no quotes, and base64 has none), the
small rest is parsed by orjson, and each long string goes back in as a str made straight from its
bytes (an ASCII check and one copy, ~0.06 ms per MB).

`loads(body) == orjson.loads(body)` for every body orjson accepts (tests/unit/test_json_payload.py
checks it on generated documents), and every body it refuses is refused, with one exception: a long
string holding raw control characters, which JSON forbids, is taken as it is. Nothing reads such a
string as anything but base64, whose decoding refuses them.
"""

from __future__ import annotations

from typing import Any

import orjson

LONG_STRING = 64 * 1024
# Image answers have a few dozen quotes; past this many the walk (a Python loop) could cost more
# than it saves, so such a body goes to orjson whole.
MAX_QUOTES = 2048
# A cut-out string's stand-in: it starts with NUL, which no parsed string can hold when the rest of
# the body has no \u0000 escape of its own (a raw NUL is invalid JSON), so stand-ins never meet real
# values. (The long strings cut out have no backslash, so no escape either.)
_STAND_IN = "\x00mg-long-string:"
_STAND_IN_JSON = b'"\\u0000mg-long-string:%d"'
_NUL_ESCAPE = b"\\u0000"


def loads(body: bytes) -> Any:
    """The JSON value of `body`; orjson.JSONDecodeError (a ValueError) if it is not JSON."""
    spans = _long_strings(body) if len(body) >= LONG_STRING else []
    if not spans:
        return orjson.loads(body)
    view = memoryview(body)
    pieces: list[bytes | memoryview] = []
    strings: list[str] = []
    position = 0
    for start, end in spans:  # body[start:end] is the text between a string's quotes
        try:
            text = str(view[start:end], "ascii")
        except UnicodeDecodeError:
            continue  # not base64; orjson parses it in place
        pieces += (view[position : start - 1], _STAND_IN_JSON % len(strings))
        strings.append(text)
        position = end + 1
    pieces.append(view[position:])
    rest = b"".join(pieces)
    if rest.count(_NUL_ESCAPE) != len(strings):  # a real \u0000 (or "\\u0000"): no stand-ins then
        return orjson.loads(body)
    return _put_back(orjson.loads(rest), strings)


def _long_strings(body: bytes) -> list[tuple[int, int]]:
    """(start, end) of the contents of each string at least LONG_STRING long without a backslash.

    Walks the quotes of the document in order: outside a string a quote opens one, and inside it the
    first quote that is not escaped closes it. A body that is not JSON may give spans that are not
    strings; orjson then refuses the rest of the body all the same. Past MAX_QUOTES quotes there
    are no spans."""
    spans: list[tuple[int, int]] = []
    opening = -1  # the quote that opened the string the walk is in, if it is in one
    quote = body.find(b'"')
    for _ in range(MAX_QUOTES):
        if quote == -1:
            return spans  # (a string left open stays open in the rest: orjson reports it)
        if opening == -1:
            opening = quote
        elif not _escaped(body, quote):
            if quote - opening - 1 >= LONG_STRING and body.find(b"\\", opening + 1, quote) == -1:
                spans.append((opening + 1, quote))
            opening = -1
        quote = body.find(b'"', quote + 1)
    return []


def _escaped(body: bytes, quote: int) -> bool:
    """Whether the quote at `quote` is preceded by an odd number of backslashes."""
    backslashes = 0
    while body[quote - 1 - backslashes] == 0x5C:
        backslashes += 1
    return backslashes % 2 == 1


def _put_back(value: Any, strings: list[str]) -> Any:
    if isinstance(value, str):
        return strings[int(value[len(_STAND_IN) :])] if value.startswith(_STAND_IN) else value
    if isinstance(value, list):
        return [_put_back(item, strings) for item in value]
    if isinstance(value, dict):
        return {_put_back(key, strings): _put_back(item, strings) for key, item in value.items()}
    return value
