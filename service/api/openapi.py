"""The OpenAPI 3.1 document of the REST surface, generated from the proto's descriptor set.

The REST surface is the google.api.http projection of proto/mg/v1/ (the image API, the admin API and
the console), so the document is derived from the same descriptor set Envoy's transcoder loads
(with its comments):
  - one operation per method with an http rule: its path (`{id=**}` becomes `{id}`), path and query
    parameters (the request's fields not bound to the path or body), its JSON body (`body: "*"`),
    and its answer (the response message as the transcoder prints it: proto field names, defaults
    omitted, `bytes` as base64, 32-bit integers as numbers);
  - a schema per message; fields marked `(google.api.field_behavior) = REQUIRED` are required in
    request bodies (answers require nothing, since defaults are omitted); the constraints the
    server checks on every request (validation.py's ranges and choices) are stated on the fields;
What the proto cannot say is written here, each in one table:
  - the routes whose request or answer is a google.api.HttpBody, read or written by the worker:
    POST /v1/images/edits and /variations (multipart/form-data as the SDKs send it, or JSON:
    service/api/uploads.py), the ImagesResponse JSON or `text/event-stream` answers of the image
    routes (service/api/events.py), hosted files, and this document;
  - the error envelope, which envoy/errors.lua makes of every failure, and the statuses each route
    answers;
  - the headers every answer carries.

`python -m service.api.openapi [PATH]` prints it (or writes PATH); docs/openapi.json is its output,
held to it by tests/unit/test_openapi.py, and the gateway serves it at GET /openapi.json.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from service.admin_session import COOKIE_NAME, CSRF_HEADER
from service.api.interceptors.admin_auth import ADMIN_METHODS, READ_METHODS, TOKEN_ONLY_METHODS
from service.api.interceptors.auth import PUBLIC_METHODS
from service.config import DESCRIPTOR_SET_NAME
from service.console.files import MEDIA_TYPES as CONSOLE_MEDIA_TYPES
from service.console.servicer import ADMIN_READ_METHODS
from service.errors import ALL_ERRORS, EDGE_DEFAULTS
from service.generation.edits import INPUT_FIDELITIES, MAX_INPUT_IMAGES
from service.generation.routing import SERVED_BY_HEADER
from service.generation.validation import (
    BACKGROUNDS,
    MAX_N,
    MAX_PARTIAL_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_USER_CHARS,
    MODERATIONS,
    OUTPUT_FORMATS,
    RESPONSE_FORMATS,
    STYLES,
)

# The files whose REST bindings make the surface: the image API, the admin API, the console.
PROTO_FILES = ("mg/v1/image_generation.proto", "mg/v1/admin.proto", "mg/v1/console.proto")
PACKAGE = "mg.v1"
FDP = descriptor_pb2.FieldDescriptorProto
SCHEMAS = "#/components/schemas/"

EXAMPLE_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGklEQVR42mM8YaPBQApgYiARjGoY1TB0N"
    "AAAyUUBTEzmkP4AAAAASUVORK5CYII="
)
# Constraints the server checks on every request, and examples, by field name (in every request
# message that has the field) or by `Message.field`. Model-dependent limits (sizes, qualities, a
# model's own n or prompt limit) are not here: GET /v1/models states them per model.
FIELD_CONSTRAINTS: dict[str, dict[str, Any]] = {
    "model": {"examples": ["local/sketch", "openai/gpt-image-1", "dall-e-3"]},
    "prompt": {"minLength": 1, "maxLength": MAX_PROMPT_CHARS, "examples": ["a lighthouse at dusk"]},
    "size": {"examples": ["256x256", "1024x1024"]},
    # (the offline models that edit and make variations, and a picture for them: a 16x16 PNG)
    "EditImagesRequest.model": {"examples": ["local/canvas", "openai/gpt-image-1"]},
    "EditImagesRequest.images": {"examples": [[{"image_url": EXAMPLE_IMAGE}]]},
    "CreateImageVariationsRequest.model": {"examples": ["local/canvas", "openai/dall-e-2"]},
    "CreateImageVariationsRequest.image": {"examples": [{"image_url": EXAMPLE_IMAGE}]},
    "n": {"minimum": 1, "maximum": MAX_N},
    "user": {"maxLength": MAX_USER_CHARS},
    "response_format": {"enum": list(RESPONSE_FORMATS)},
    "style": {"enum": list(STYLES)},
    "background": {"enum": list(BACKGROUNDS)},
    "moderation": {"enum": list(MODERATIONS)},
    "output_format": {"enum": list(OUTPUT_FORMATS)},
    "output_compression": {"minimum": 0, "maximum": 100},
    "partial_images": {"minimum": 0, "maximum": MAX_PARTIAL_IMAGES},
    "input_fidelity": {"enum": list(INPUT_FIDELITIES)},
    "images": {"minItems": 1, "maxItems": MAX_INPUT_IMAGES},
    # The admin API's (service/admin.py checks them).
    "CreateProjectRequest.name": {"minLength": 1, "maxLength": 100, "examples": ["team-a"]},
    "CreateProjectRequest.allow": {"examples": [["local/*"]]},
    "budget_usd": {"examples": ["5", "12.50"]},
    "rpm": {"minimum": 1},
    "CreateKeyRequest.project": {"examples": ["team-a"]},
    "GetConsoleFileRequest.path": {"examples": ["app.js"]},
}
REQUEST_MESSAGES = ("GenerateImagesRequest", "EditImagesRequest", "CreateImageVariationsRequest")

# Routes whose request is an HttpBody, read by the worker into this message (service/api/uploads.py).
UPLOADS = {"EditImagesHttp": "EditImagesRequest", "CreateImageVariationsHttp": "CreateImageVariationsRequest"}
# The multipart form's file fields (InputImage fields), and the names they are sent under.
FORM_FILE_NAMES = {"images": ("image", "image[]"), "mask": ("mask",), "image": ("image",)}
# Routes whose answer is an HttpBody: what it holds.
IMAGES_JSON = {"application/json": {"schema": {"$ref": SCHEMAS + "ImagesResponse"}}}


def _event_stream(prefix: str) -> dict[str, Any]:
    """Each server-sent event of a stream, in the event model OpenAPI 3.2 gives `text/event-stream`
    (its `event` and `data` lines), which 3.1 tools read from `schema`: the data is the event as JSON."""
    names = [f"{prefix}.partial_image", f"{prefix}.completed", "error"]
    return {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "properties": {
                    "event": {"type": "string", "enum": names},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "oneOf": [
                                {"$ref": SCHEMAS + "ImageGenerationEvent"},
                                {"$ref": SCHEMAS + "StreamErrorEvent"},
                            ]
                        },
                    },
                },
                "required": ["event", "data"],
            }
        }
    }


IMAGE_BYTES = {
    media: {"schema": {"type": "string", "contentMediaType": media}}
    for media in ("image/png", "image/jpeg", "image/webp")
}
HTTP_BODY_ANSWERS: dict[str, tuple[str, dict[str, Any]]] = {
    "GenerateImagesJson": (
        "The images (JSON); with `stream: true`, server-sent events: `event: <type>` and `data: <the "
        "event as JSON>`, partial images then the completed event (ImageGenerationEvent), or an "
        "`error` event (StreamErrorEvent) when the call fails after the first event.",
        {**IMAGES_JSON, **_event_stream("image_generation")},
    ),
    "EditImagesHttp": (
        "The edited images (JSON); with `stream: true`, server-sent events as for generations, named "
        "`image_edit.partial_image` and `image_edit.completed`.",
        {**IMAGES_JSON, **_event_stream("image_edit")},
    ),
    "CreateImageVariationsHttp": ("The variations.", IMAGES_JSON),
    "GetFile": ("The hosted image's bytes, with its content type.", IMAGE_BYTES),
    "GetConsoleFile": (
        "The console's file (its index page at /console), with the console's security headers.",
        {
            media.split(";")[0]: {"schema": {"type": "string"}}
            for media in sorted(set(CONSOLE_MEDIA_TYPES.values()))
        },
    ),
    "GetThumbnail": ("The thumbnail's bytes (WebP).", {"image/webp": {"schema": {"type": "string"}}}),
    "ApiDocument": (
        "This document.",
        {"application/json": {"schema": {"type": "object", "required": ["openapi", "paths"]}}},
    ),
}

# The messages those answers hold.
HTTP_BODY_MESSAGES = ("ImagesResponse", "ImageGenerationEvent")

# The error statuses each route answers (docs/api.md#errors says when), besides 401 for every route
# that needs a key.
_MAKES_IMAGES = (400, 402, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504, 507)
ERROR_STATUSES: dict[str, tuple[int, ...]] = {
    "GenerateImagesJson": _MAKES_IMAGES,
    "EditImagesHttp": _MAKES_IMAGES,
    "CreateImageVariationsHttp": _MAKES_IMAGES,
    "ListModels": (400, 408, 429, 500, 503),
    "GetModel": (400, 404, 408, 429, 500, 503),
    "GetFile": (400, 403, 404, 408, 500, 503),
    "Liveness": (408, 500, 503),
    "Readiness": (408, 500, 503),
    "ApiDocument": (408, 500, 503),
    # The console (404 when it is off, MG_CONSOLE=false, or has no such file or thumbnail).
    "GetConsoleFile": (404, 408, 500, 503),
    "ListCatalog": (404, 408, 500, 503),
    "GetThumbnail": (400, 404, 408, 500, 503),
}


def _method_names(full_names: frozenset[str]) -> frozenset[str]:
    return frozenset(method.rsplit("/", 1)[1] for method in full_names)


# Who may call what: the admin routes take the admin token or the console's session (some the token
# alone), the console's data reads too; a change made with the session needs its CSRF value (403
# without). Every admin route is 404 while no admin token is configured.
ADMIN_CREDENTIALS = _method_names(ADMIN_METHODS | ADMIN_READ_METHODS)
ADMIN_TOKEN_ONLY = _method_names(TOKEN_ONLY_METHODS)
CSRF_CHECKED = _method_names(ADMIN_METHODS - READ_METHODS - TOKEN_ONLY_METHODS)
# An admin read answers these; a call with a body may also be too large (413); a change made with
# the session's cookie, 403 without its CSRF value.
_ADMIN_READ = (400, 404, 408, 500, 503)
ERROR_STATUSES.update(
    {
        name: tuple(sorted({*_ADMIN_READ, *((413, 403) if name in CSRF_CHECKED else ())}))
        for name in _method_names(ADMIN_METHODS - TOKEN_ONLY_METHODS)
    }
    | {name: tuple(sorted({*_ADMIN_READ, 413})) for name in ADMIN_TOKEN_ONLY}
)
# Routes callable with no credentials at all: what the auth interceptor lets through with no API
# key, less the console's reads, which need the admin's.
CREDENTIAL_FREE = _method_names(PUBLIC_METHODS) - ADMIN_CREDENTIALS
CSRF_PARAMETER = {
    "name": CSRF_HEADER,
    "in": "header",
    "required": False,
    "description": "The session's CSRF value (POST /v1/admin/session answers it): needed when the call "
    "is authenticated by the console's session cookie, not with the admin token.",
    "schema": {"type": "string"},
}
HEADERS = {
    "x-mg-version": {
        "description": "The gateway's version, on every answer (also `server: mg/<version>`).",
        "required": True,
        "schema": {"type": "string"},
    },
    "x-request-id": {
        "description": "The request's id: the gateway's logs and ledger name the request by it.",
        "schema": {"type": "string"},
    },
}

# On the images a call made (not on a replay): the model that made them.
SERVED_BY: dict[str, Any] = {
    "description": "The model that made the images (the route's target that answered).",
    "schema": {"type": "string"},
}

_SCALARS: dict[int, dict[str, Any]] = {
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_DOUBLE: {"type": "number"},
    FDP.TYPE_FLOAT: {"type": "number"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FDP.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    # 64-bit integers print as strings (and are read from either form).
    FDP.TYPE_INT64: {"type": "string", "pattern": "^-?[0-9]+$"},
    FDP.TYPE_UINT64: {"type": "string", "pattern": "^[0-9]+$"},
    FDP.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
# Well-known types with a JSON form of their own.
_WELL_KNOWN = {".google.protobuf.Struct": {"type": "object"}}


class _Proto:
    """The mg proto files of a descriptor set: messages by name (across the files, one package),
    comments by file and descriptor path."""

    def __init__(self, descriptor_set: bytes) -> None:
        by_name = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file}
        self.files = [by_name[name] for name in PROTO_FILES]
        self.messages = {
            m.name: (file.name, i, m) for file in self.files for i, m in enumerate(file.message_type)
        }
        self.comments = {
            (file.name, *location.path): _clean(location.leading_comments)
            for file in self.files
            for location in file.source_code_info.location
            if location.leading_comments.strip()
        }

    def message(self, name: str) -> descriptor_pb2.DescriptorProto:
        return self.messages[name][2]

    def comment(self, message: str, field: int | None = None) -> str | None:
        """The comment of a message, or of its field at that index."""
        file, index, _ = self.messages[message]
        return self.comments.get((file, 4, index) if field is None else (file, 4, index, 2, field))

    def methods(self) -> Iterator[tuple[str, descriptor_pb2.MethodDescriptorProto, str]]:
        for file in self.files:
            for s, service in enumerate(file.service):
                for m, method in enumerate(service.method):
                    yield service.name, method, self.comments.get((file.name, 6, s, 2, m), "")


def _clean(comment: str) -> str:
    return " ".join(line.strip() for line in comment.strip().splitlines())


def _local_name(type_name: str) -> str:
    prefix = f".{PACKAGE}."
    if not type_name.startswith(prefix):
        raise ValueError(f"{type_name}: only {PACKAGE} messages and well-known types are mapped")
    return type_name.removeprefix(prefix)


class _Builder:
    def __init__(self, proto: _Proto) -> None:
        self.proto = proto
        self.schemas: dict[str, Any] = {}

    def ref(self, name: str, request: bool = False) -> dict[str, Any]:
        if name not in self.schemas:
            self.schemas[name] = {}  # (placed first: recursion stops here)
            self.schemas[name] = self.message_schema(name, request)
        return {"$ref": SCHEMAS + name}

    def message_schema(self, name: str, request: bool) -> dict[str, Any]:
        message = self.proto.message(name)
        schema: dict[str, Any] = {"type": "object"}
        described = self.proto.comment(name)
        if described:
            schema["description"] = described
        properties: dict[str, Any] = {}
        required = []
        for f, field in enumerate(message.field):
            properties[field.name] = self.field_schema(
                f"{name}.{field.name}", field, request, self.proto.comment(name, f)
            )
            if request and _required(field):
                required.append(field.name)
        schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def field_schema(
        self, qualified: str, field: descriptor_pb2.FieldDescriptorProto, request: bool, comment: str | None
    ) -> Any:
        schema = self.value_schema(field, request)
        if field.label == FDP.LABEL_REPEATED and not self.is_map(field):
            schema = {"type": "array", "items": schema}
        extra: dict[str, Any] = {"description": comment} if comment else {}
        if request:
            extra.update({**FIELD_CONSTRAINTS.get(field.name, {}), **FIELD_CONSTRAINTS.get(qualified, {})})
        if not extra:
            return schema
        # (a reference stays alone in an allOf, so what is said of the field is not read as the message's)
        return {**extra, "allOf": [schema]} if "$ref" in schema else {**extra, **schema}

    def is_map(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        if field.type != FDP.TYPE_MESSAGE or field.type_name in _WELL_KNOWN:
            return False
        entry = self.proto.message(_local_name(field.type_name).split(".")[0])
        nested = _local_name(field.type_name).split(".")[1:]
        return bool(nested) and any(n.name == nested[0] and n.options.map_entry for n in entry.nested_type)

    def value_schema(self, field: descriptor_pb2.FieldDescriptorProto, request: bool) -> dict[str, Any]:
        if field.type in _SCALARS:
            return dict(_SCALARS[field.type])
        if field.type != FDP.TYPE_MESSAGE:
            raise ValueError(f"{field.name}: type {field.type} is not mapped")
        if field.type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[field.type_name])
        if self.is_map(field):
            outer, entry_name = _local_name(field.type_name).split(".")
            parent = self.proto.message(outer)
            entry = next(n for n in parent.nested_type if n.name == entry_name)
            value = next(f for f in entry.field if f.name == "value")
            return {"type": "object", "additionalProperties": self.value_schema(value, request)}
        return self.ref(_local_name(field.type_name), request)


def _required(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    return field_behavior_pb2.REQUIRED in field.options.Extensions[field_behavior_pb2.field_behavior]


def _error_schemas() -> dict[str, Any]:
    codes = sorted({error.kind.code for error in ALL_ERRORS})
    types = sorted({error.kind.type for error in ALL_ERRORS} | {"invalid_request_error", "server_error"})
    error = {
        "type": "object",
        "description": "What went wrong. `code` is one of mg's codes (listed in `examples`), or "
        "`HTTP_<status>` for a status the edge answers without one.",
        "properties": {
            "code": {"type": "string", "examples": codes},
            "message": {"type": "string", "description": "In plain words, with what to do about it."},
            "type": {"type": "string", "enum": types},
            "param": {"type": ["string", "null"], "description": "The request field at fault, if one is."},
        },
        "required": ["code", "message", "type", "param"],
    }
    return {
        "Error": error,
        "ErrorResponse": {
            "type": "object",
            "description": "Every failure's body: OpenAI's error envelope (the SDKs raise their matching "
            "exception classes).",
            "properties": {"error": {"$ref": SCHEMAS + "Error"}},
            "required": ["error"],
        },
        "StreamErrorEvent": {
            "type": "object",
            "description": "The event that ends a stream which fails after its first event.",
            "properties": {"type": {"const": "error"}, "error": {"$ref": SCHEMAS + "Error"}},
            "required": ["type", "error"],
        },
    }


def _error_responses() -> dict[str, Any]:
    statuses = sorted({status for listed in ERROR_STATUSES.values() for status in listed} | {401})
    return {
        f"Error{status}": {
            "description": _status_description(status),
            "headers": {name: {"$ref": "#/components/headers/" + name} for name in HEADERS},
            "content": {"application/json": {"schema": {"$ref": SCHEMAS + "ErrorResponse"}}},
        }
        for status in statuses
    }


def _status_description(status: int) -> str:
    codes = sorted(e.kind.code for e in ALL_ERRORS if e.kind.http_status == status)
    edge = EDGE_DEFAULTS.get(status)
    if codes:
        return ", ".join(codes)
    return f"HTTP_{status}" if edge is None else edge.code


def _path(template: str) -> tuple[str, list[str]]:
    """`/v1/models/{id=**}` -> (`/v1/models/{id}`, ["id"])."""
    names = re.findall(r"\{([a-z_]+)(?:=[^}]*)?\}", template)
    return re.sub(r"\{([a-z_]+)(?:=[^}]*)?\}", r"{\1}", template), names


def _form_schema(builder: _Builder, message: str) -> dict[str, Any]:
    """The multipart form of an upload: file parts for its images, a text part per other field."""
    json_schema = builder.schemas[message]
    properties: dict[str, Any] = {}
    for name, field_schema in json_schema["properties"].items():
        if name in FORM_FILE_NAMES:
            file = {"type": "string", "contentMediaType": "application/octet-stream"}
            for form_name in FORM_FILE_NAMES[name]:
                many = form_name.endswith("[]") or (name == "images" and form_name == "image")
                properties[form_name] = (
                    {"type": "array", "items": file, "maxItems": MAX_INPUT_IMAGES} if many else file
                )
            continue
        if name == "provider_options":
            properties[name] = {
                "type": "string",
                "contentMediaType": "application/json",
                "description": field_schema.get("description", ""),
            }
            continue
        properties[name] = field_schema
    required = [r for r in json_schema.get("required", []) if r not in FORM_FILE_NAMES]
    schema: dict[str, Any] = {
        "type": "object",
        "description": "As the OpenAI SDKs send it. Images are file parts (`image`, or `image[]` "
        "repeated; an image part without a filename is read as an image URL); `provider_options` is "
        "JSON text.",
        "properties": properties,
    }
    if required:
        schema["required"] = required
    return schema


def _upload_body(builder: _Builder, message: str) -> dict[str, Any]:
    """An upload's body: the multipart form the SDKs send, or the message's JSON form."""
    json_ref = builder.ref(message, request=True)
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _form_schema(builder, message)},
            "application/json": {"schema": json_ref},
        },
    }


def _parameters(builder: _Builder, request_type: str, bound: list[str]) -> list[dict[str, Any]]:
    """A bodiless request's fields: those named in the path template, the rest in the query."""
    request = builder.proto.message(request_type)
    parameters = []
    for f, field in enumerate(request.field):
        where = "path" if field.name in bound else "query"
        parameter: dict[str, Any] = {
            "name": field.name,
            "in": where,
            "required": where == "path",
            "schema": builder.value_schema(field, request=True),
        }
        described = builder.proto.comment(request_type, f)
        if described:
            parameter["description"] = described
        parameters.append(parameter)
    return parameters


def _bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, str]]:
    """A method's REST bindings, its own and its additional ones: (verb, path template, body)."""
    for binding in (rule, *rule.additional_bindings):
        verb = binding.WhichOneof("pattern")
        assert verb is not None and verb != "custom", "every binding is one of get/post/patch/delete"
        yield verb, getattr(binding, verb), binding.body


def _operation(
    builder: _Builder,
    service: str,
    method: descriptor_pb2.MethodDescriptorProto,
    comment: str,
    bound: list[str],
    body: str,
) -> dict[str, Any]:
    name = method.name
    operation: dict[str, Any] = {"operationId": name, "tags": [service]}
    if comment:
        operation["summary"] = comment.split(". ")[0].rstrip(".")
        operation["description"] = comment
    parameters: list[dict[str, Any]] = []
    if name in UPLOADS:
        operation["requestBody"] = _upload_body(builder, UPLOADS[name])
    elif method.input_type.startswith(f".{PACKAGE}."):
        request_type = _local_name(method.input_type)
        if body == "*":
            schema = builder.ref(request_type, request=True)
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
            parameters = [p for p in _parameters(builder, request_type, bound) if p["in"] == "path"]
        else:
            parameters = _parameters(builder, request_type, bound)
    if name in CSRF_CHECKED:
        parameters.append(CSRF_PARAMETER)
    if parameters:
        operation["parameters"] = parameters
    if name in HTTP_BODY_ANSWERS:
        description, content = HTTP_BODY_ANSWERS[name]
    else:
        description, content = (
            "OK",
            {"application/json": {"schema": builder.ref(_local_name(method.output_type))}},
        )
    headers: dict[str, Any] = {h: {"$ref": "#/components/headers/" + h} for h in HEADERS}
    if ERROR_STATUSES[name] is _MAKES_IMAGES:
        headers[SERVED_BY_HEADER] = SERVED_BY
    responses: dict[str, Any] = {"200": {"description": description, "headers": headers, "content": content}}
    statuses = set(ERROR_STATUSES[name]) | (set() if name in CREDENTIAL_FREE else {401})
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    operation["responses"] = responses
    if name in CREDENTIAL_FREE:
        operation["security"] = []
    elif name in ADMIN_TOKEN_ONLY:
        operation["security"] = [{"adminToken": []}]
    elif name in ADMIN_CREDENTIALS:
        operation["security"] = [{"adminToken": []}, {"adminSession": []}]
    return operation


def build(descriptor_set: bytes, mg_version: str) -> dict[str, Any]:
    proto = _Proto(descriptor_set)
    builder = _Builder(proto)
    paths: dict[str, Any] = {}
    for service, method, comment in proto.methods():
        if not method.options.HasExtension(annotations_pb2.http):
            continue
        bindings = _bindings(method.options.Extensions[annotations_pb2.http])
        for n, (verb, template, body) in enumerate(bindings):
            path, bound = _path(template)
            operation = _operation(builder, service, method, comment, bound, body)
            if n:  # (an operation id names one binding)
                operation["operationId"] += str(n + 1)
            paths.setdefault(path, {})[verb] = operation
    for name in HTTP_BODY_MESSAGES:
        builder.ref(name)
    schemas = {**dict(sorted(builder.schemas.items())), **_error_schemas()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mg",
            "version": mg_version,
            "summary": "A self-hosted, OpenAI-compatible image-generation gateway.",
            "description": "The OpenAI Images API's shape in front of every image provider, and the "
            "admin API and console beside it. Generated from proto/mg/v1/ (image_generation, admin, "
            "console); docs/api.md is the reference.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An mg API key (mg_live_...).",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (MG_ADMIN_TOKEN; docs/api.md#admin-api). API keys "
                    "are refused on the admin routes, and the admin token on the image routes.",
                },
                "adminSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": COOKIE_NAME,
                    "description": "The console's session, made by POST /v1/admin/session. A change "
                    f"made with it also sends the session's CSRF value in `{CSRF_HEADER}`.",
                },
            },
            "headers": HEADERS,
            "schemas": schemas,
            "responses": _error_responses(),
        },
    }


def render(descriptor_set: bytes, mg_version: str) -> bytes:
    """The document as served and committed: JSON, two-space indented, ending with a newline."""
    return (json.dumps(build(descriptor_set, mg_version), indent=2, ensure_ascii=False) + "\n").encode()


def document() -> bytes:
    """The document of this installation: its descriptor set and its version."""
    return render((files("mg") / DESCRIPTOR_SET_NAME).read_bytes(), version("mg-gateway"))


def main(argv: list[str]) -> None:
    rendered = document()
    if argv:
        Path(argv[0]).write_bytes(rendered)
    else:
        sys.stdout.buffer.write(rendered)


if __name__ == "__main__":
    main(sys.argv[1:])
