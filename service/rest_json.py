"""The REST body of a response message, rendered in the worker: its proto3 JSON form, printed as
Envoy's transcoder prints it (field names as written in the proto, defaults omitted, `optional`
fields printed when set, 64-bit integers as strings, bytes as standard base64).

Why the worker and not the transcoder: the transcoder base64-encodes `bytes` fields itself at about
4 ms of Envoy CPU per MB of image (FINDINGS.md, `make bench`), which made it the bottleneck of every
image response. POST /v1/images/generations is bound to GenerateImagesJson, which answers a
google.api.HttpBody whose data is this JSON (pybase64 + orjson: ~0.1 ms per MB); Envoy passes it
through. tests/unit/test_rest_json.py holds it to protobuf's own json_format.

Covers the field types response messages use; floats and well-known types (Struct, Timestamp, ...)
have mappings of their own and are refused rather than printed wrongly.
"""

from __future__ import annotations

from typing import Any

import orjson
import pybase64
from google.api import httpbody_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

JSON_CONTENT_TYPE = "application/json"

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


def message_to_dict(message: Message) -> dict[str, Any]:
    descriptor = message.DESCRIPTOR
    if descriptor.full_name.startswith("google.protobuf."):
        raise TypeError(f"{descriptor.full_name} has its own JSON mapping; not supported here")
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        entry = field.message_type
        if field.is_repeated and entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            out[field.name] = {str(k): _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, item) for item in value]
        else:
            out[field.name] = _value(field, value)
    return out


def message_to_json(message: Message) -> bytes:
    return orjson.dumps(message_to_dict(message))


def as_http_body(message: Message) -> bytes:
    """The serialized google.api.HttpBody carrying `message` as JSON (a gRPC response serializer)."""
    body = httpbody_pb2.HttpBody(content_type=JSON_CONTENT_TYPE, data=message_to_json(message))
    return body.SerializeToString()  # type: ignore[no-any-return]


def _value(field: FieldDescriptor, value: Any) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return message_to_dict(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        return pybase64.b64encode_as_string(value)
    if kind in _INT64_TYPES:
        return str(value)
    if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        number = field.enum_type.values_by_number.get(value)
        return number.name if number is not None else value
    if kind in _UNSUPPORTED_TYPES:
        raise TypeError(f"{field.full_name}: float fields are not printed here (json_format rounds them)")
    return value
