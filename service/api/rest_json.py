"""The REST body of a response message, rendered in the worker: its proto3 JSON form, printed as
Envoy's transcoder prints it (field names as written in the proto, defaults omitted, `optional`
fields printed when set, 64-bit integers as strings, bytes as standard base64).

Why the worker and not the transcoder: the transcoder base64-encodes `bytes` fields itself at about
4 ms of Envoy CPU per MB of image (FINDINGS.md, `make bench`), which made it the bottleneck of every
image response. POST /v1/images/generations is bound to GenerateImagesJson, which answers a
google.api.HttpBody whose data is this JSON (pybase64: ~0.03 ms per MB); Envoy passes it through.
The JSON is assembled from pieces, each image's base64 one piece, so image bytes are copied as
few times as possible on their way to the frame. tests/unit/test_rest_json.py holds it to
protobuf's own json_format.

Covers the field types response messages use; floats and well-known types (Struct, Timestamp, ...)
have mappings of their own and are refused rather than printed wrongly.
"""

from __future__ import annotations

from typing import Any

import orjson
import pybase64
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

JSON_CONTENT_TYPE = "application/json"
SSE_CONTENT_TYPE = "text/event-stream"

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
# json_format prints float32 by its shortest round-tripping form; no response message has floats.
_UNSUPPORTED_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})


def message_to_json(message: Message) -> bytes:
    return b"".join(_json_chunks(message))


def as_http_body(message: Message) -> bytes:
    """The serialized google.api.HttpBody carrying `message` as JSON (a gRPC response serializer).

    Written as protobuf wire bytes directly (field 1 content_type, field 2 data; the encoding
    HttpBody.SerializeToString gives, checked by the tests) so that a response of several images is
    copied once into the frame, not three more times through an HttpBody message."""
    return _http_body(_HTTP_BODY_HEAD, _json_chunks(message))


def as_sse_http_body(event: str, message: Message) -> bytes:
    """The serialized google.api.HttpBody carrying one server-sent event: `event: <event>` and
    `data: <message as JSON>` (the frame OpenAI's stream endpoints send). The transcoder answers a
    server-streaming HttpBody method with the first message's content type and passes each
    message's data on as it comes."""
    return _http_body(_SSE_HEAD, _sse_chunks(event, _json_chunks(message)))


def sse_http_body(event: str, data: bytes) -> bytes:
    """As as_sse_http_body, for data that is JSON already (an error event)."""
    return _http_body(_SSE_HEAD, _sse_chunks(event, [data]))


def _sse_chunks(event: str, data: list[bytes]) -> list[bytes]:
    # (event names and JSON text hold no line breaks, so each is one SSE line)
    return [b"event: ", event.encode(), b"\ndata: ", *data, b"\n\n"]


def _http_body(head: bytes, chunks: list[bytes]) -> bytes:
    return b"".join([head, _varint(sum(map(len, chunks))), *chunks])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _head(content_type: str) -> bytes:
    """HttpBody's field 1 (content_type) and the tag of field 2 (data), whose length follows."""
    return b"\x0a" + _varint(len(content_type)) + content_type.encode() + b"\x12"


_HTTP_BODY_HEAD = _head(JSON_CONTENT_TYPE)
_SSE_HEAD = _head(SSE_CONTENT_TYPE)


def _json_chunks(message: Message) -> list[bytes]:
    """The JSON text as a list of pieces; base64 images are pieces of their own (never re-copied)."""
    out: list[bytes] = []
    _write_message(message, out)
    return out


def _write_message(message: Message, out: list[bytes]) -> None:
    descriptor = message.DESCRIPTOR
    if descriptor.full_name.startswith("google.protobuf."):
        raise TypeError(f"{descriptor.full_name} has its own JSON mapping; not supported here")
    out.append(b"{")
    for index, (field, value) in enumerate(message.ListFields()):
        out.append(b',"' if index else b'"')
        out.append(field.name.encode())  # proto field names are [A-Za-z0-9_]: nothing to escape
        out.append(b'":')
        entry = field.message_type
        if field.is_repeated and entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            out.append(b"{")
            for position, (key, item) in enumerate(value.items()):
                out.append(b"," if position else b"")
                out.append(orjson.dumps(str(key)))
                out.append(b":")
                _write_value(value_field, item, out)
            out.append(b"}")
        elif field.is_repeated:
            out.append(b"[")
            for position, item in enumerate(value):
                out.append(b"," if position else b"")
                _write_value(field, item, out)
            out.append(b"]")
        else:
            _write_value(field, value, out)
    out.append(b"}")


def _write_value(field: FieldDescriptor, value: Any, out: list[bytes]) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        _write_message(value, out)
    elif kind == FieldDescriptor.TYPE_BYTES:
        out.extend((b'"', pybase64.b64encode(value), b'"'))
    elif kind in _INT64_TYPES:
        out.append(b'"%d"' % value)
    elif kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        number = field.enum_type.values_by_number.get(value)
        out.append(orjson.dumps(number.name if number is not None else value))
    elif kind in _UNSUPPORTED_TYPES:
        raise TypeError(f"{field.full_name}: float fields are not printed here (json_format rounds them)")
    else:
        out.append(orjson.dumps(value))
