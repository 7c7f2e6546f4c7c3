"""REST uploads: the body of POST /v1/images/edits and /v1/images/variations, read into its message.

Envoy's transcoder hands these bodies over raw (the routes' request type is google.api.HttpBody:
the bytes and their Content-Type). They are read here into an EditImagesRequest or a
CreateImageVariationsRequest, as the gRPC request deserializer of the REST bindings, so every
interceptor (idempotency fingerprints included) and the servicer see the same typed message a
gRPC caller sends:
  - multipart/form-data, as the OpenAI SDKs send it: a part per field, named as the message's fields;
    file parts (`image`, `image[]` repeated, `mask`) become InputImage bytes, a text part for an
    image field its image_url; integers, booleans and `providerOptions` (JSON text) are parsed;
  - application/json: the message's JSON form (`images: [{"image_url": ...}]`, `mask: {...}`).
Unknown fields and parts are ignored, as the transcoder ignores unknown JSON fields.

The parser is python-multipart's (the one Starlette and FastAPI use): streaming, RFC 7578, with
header limits, and no file ever spilled to disk, since parts are collected here. Each file part is
capped at the reference-image size limit and each text part at MAX_TEXT_BYTES (413), and a body at
MAX_PARTS parts (400; how many images a model takes is edits.py's check); the whole body was already capped by
the edge (MG_MAX_REQUEST_BYTES, 413). Anything that does not read is a 400 naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from google.api import httpbody_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from mg.v1 import image_generation_pb2 as pb
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadRequest, RequestTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

M = TypeVar("M", bound=Message)

MAX_TEXT_BYTES = 64 * 1024  # a prompt is at most 8000 characters; providerOptions stay small
MAX_PARTS = 64  # 16 images, a mask and every text field, with room to spare
FORM = "multipart/form-data"
JSON = "application/json"
_INTEGERS = frozenset({FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32})
# Form names that differ from the message's field: an edit's images come as `image` or `image[]`.
_FORM_ALIASES = {"image": "images"}


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: bytes | None = None
    # views into the body (no copy until the part is complete: images are megabytes)
    chunks: list[memoryview] = field(default_factory=list)
    size: int = 0

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class _FormReader:
    """Collects the parts of one multipart body, within the limits."""

    def __init__(self, max_file_bytes: int) -> None:
        self.parts: list[_Part] = []
        self.ended = False
        self._max_file_bytes = max_file_bytes
        self._field = b""
        self._value = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise BadRequest(f"The form has more than {MAX_PARTS} parts.")
        self.parts.append(_Part())

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.parts[-1].headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        part = self.parts[-1]
        disposition, options = parse_options_header(part.headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest("Every part of the form needs Content-Disposition: form-data with a name.")
        part.name = options[b"name"].decode("utf-8", "replace")
        part.filename = options.get(b"filename")

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        part.chunks.append(memoryview(data)[start:end])
        part.size += end - start
        limit = self._max_file_bytes if part.filename is not None else MAX_TEXT_BYTES
        if part.size > limit:
            kind = "file" if part.filename is not None else "field"
            raise RequestTooLarge(
                f"The {kind} {part.name!r} is larger than {limit} bytes.", param=_param(part.name)
            )

    def _end(self) -> None:
        self.ended = True


def _param(name: str) -> str:
    return name.removesuffix("[]")


def _read_form(body: httpbody_pb2.HttpBody, max_file_bytes: int) -> list[_Part]:
    _, options = parse_options_header(body.content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("A multipart/form-data body needs a boundary in its Content-Type.")
    reader = _FormReader(max_file_bytes)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        parser.write(body.data)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"The multipart/form-data body could not be read ({exc}).") from None
    if not reader.ended:
        raise BadRequest(
            "The multipart/form-data body ended early, or its parts do not use the boundary its "
            "Content-Type names."
        )
    return reader.parts


def _text(part: _Part) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"The field {part.name!r} is not UTF-8 text.", param=_param(part.name)) from None


def _set_field(message: Message, field: Any, part: _Part) -> None:  # a FieldDescriptor
    name = field.name
    if field.message_type is pb.InputImage.DESCRIPTOR:
        if field.is_repeated:
            image = getattr(message, name).add()  # in place: the bytes are not copied once more
        elif message.HasField(name):
            raise BadRequest(f"The form has more than one {name!r}.", param=name)
        else:
            image = getattr(message, name)
        if part.filename is not None:
            image.data = part.data
        else:
            image.image_url = _text(part)
        return
    value = _text(part)
    if field.message_type is not None:  # providerOptions: an object, as JSON text
        try:
            json_format.Parse(value, getattr(message, name))
        except json_format.ParseError as exc:
            raise BadRequest(f"{part.name} must be a JSON object ({exc}).", param=part.name) from None
    elif field.type in _INTEGERS:
        try:
            setattr(message, name, int(value))
        except ValueError:
            raise BadRequest(f"{name} must be an integer; got {value[:20]!r}.", param=name) from None
    elif field.type == FieldDescriptor.TYPE_BOOL:
        if value not in ("true", "false"):
            raise BadRequest(f"{name} must be true or false; got {value[:20]!r}.", param=name)
        setattr(message, name, value == "true")
    else:
        setattr(message, name, value)


def _from_form(message: M, body: httpbody_pb2.HttpBody, max_file_bytes: int) -> M:
    fields = message.DESCRIPTOR.fields_by_name
    json_names = {f.json_name: f for f in message.DESCRIPTOR.fields}
    for part in _read_form(body, max_file_bytes):
        name = _param(part.name)
        found = fields.get(name) or json_names.get(name) or fields.get(_FORM_ALIASES.get(name, ""))
        if found is not None:
            _set_field(message, found, part)
    return message


def _from_json(message: M, body: httpbody_pb2.HttpBody) -> M:
    try:
        document = orjson.loads(body.data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON ({exc}).") from None
    if not isinstance(document, dict):
        raise BadRequest("The body must be a JSON object.")
    try:
        return json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BadRequest(f"The body does not fit the request's fields ({exc}).") from None


def read_upload(message: M, body: httpbody_pb2.HttpBody, max_file_bytes: int) -> M:
    """`body` (multipart or JSON, by its content type) read into `message`."""
    media_type, _ = parse_options_header(body.content_type)
    if media_type == FORM.encode():
        return _from_form(message, body, max_file_bytes)
    if media_type == JSON.encode():
        return _from_json(message, body)
    raise BadRequest(f"Content-Type must be {FORM} or {JSON}.")


def edit_reader(max_file_bytes: int) -> Callable[[bytes], pb.EditImagesRequest]:
    """The request deserializer of EditImagesHttp (MgErrors are answered by the error interceptor)."""

    def read(raw: bytes) -> pb.EditImagesRequest:
        body = httpbody_pb2.HttpBody.FromString(raw)
        return read_upload(pb.EditImagesRequest(), body, max_file_bytes)

    return read


def variation_reader(max_file_bytes: int) -> Callable[[bytes], pb.CreateImageVariationsRequest]:
    """The request deserializer of CreateImageVariationsHttp."""

    def read(raw: bytes) -> pb.CreateImageVariationsRequest:
        return read_upload(
            pb.CreateImageVariationsRequest(), httpbody_pb2.HttpBody.FromString(raw), max_file_bytes
        )

    return read
