"""Domain errors and the one place that turns them into responses.

Every failure a caller can see is an `MgError` subclass. `to_grpc_status` renders it for both kinds of
caller at once:
  - gRPC callers get the status code plus a `google.rpc.Status` with `ErrorInfo{reason, domain="mg"}`
    (and `RetryInfo` when a retry makes sense) in `grpc-status-details-bin`;
  - REST callers (through Envoy) get the OpenAI envelope `{"error": {code, message, type, param}}`
    with the right HTTP status: the envelope travels in trailing metadata (`x-mg-error`,
    `x-http-status`) that envoy/errors.lua turns into the HTTP response.
Nothing else in the service builds an error response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import grpc
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "mg"

# Trailing-metadata keys the Envoy Lua filter reads (and strips) on the REST path.
HTTP_STATUS_KEY = "x-http-status"
ENVELOPE_KEY = "x-mg-error"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ErrorKind:
    code: str
    http_status: int
    grpc_status: str  # a grpc.StatusCode name
    type: str


# Messages travel three times in the trailers of a REST error (grpc-message, the status details, the
# envelope), and HTTP/2 header blocks are bounded: one echoing a caller's 20 kB text reset the stream.
MAX_MESSAGE_CHARS = 1000


def quoted(text: str, limit: int = 100) -> str:
    """`text` as a message may quote a caller's input: repr'd, and cut to `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


class MgError(Exception):
    """A failure with a defined meaning for callers. Each subclass fixes its kind, code included: a
    sharper code is a subclass of its general kind (below), never a string passed along, so every
    code a caller can see is listed in ALL_ERRORS and in docs/api.md's error table.

    `billed` marks an upstream failure that came after the provider had the request and was making
    its images (the answer did not come in time or broke off, the images it answered with could not
    be downloaded): the provider bills such a call, so the pipeline charges it at its bound, as it
    does a call that never returned (and a timed-out call whose job the provider accepted:
    fanout.Dispatch.owes)."""

    kind: ClassVar[ErrorKind]

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: int | None = None,
        billed: bool = False,
    ) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        self.billed = billed

    @property
    def code(self) -> str:
        return self.kind.code

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "type": self.kind.type,
                "param": self.param,
            }
        }


def _kind(code: str, http: int, grpc_status: str, type_: str) -> ErrorKind:
    return ErrorKind(code, http, grpc_status, type_)


class BadRequest(MgError):
    kind = _kind("BAD_REQUEST", 400, "INVALID_ARGUMENT", "invalid_request_error")


class ContentPolicyViolation(MgError):
    kind = _kind("CONTENT_POLICY_VIOLATION", 400, "INVALID_ARGUMENT", "invalid_request_error")


class Unauthenticated(MgError):
    kind = _kind("UNAUTHENTICATED", 401, "UNAUTHENTICATED", "authentication_error")


# The answer to a call without a key: from the server, and from the edge, which refuses such a call
# before reading its body (envoy/errors.lua).
MISSING_KEY = "Missing Authorization header; send 'Authorization: Bearer <your mg API key>'."


class BudgetExceeded(MgError):
    kind = _kind("BUDGET_EXCEEDED", 402, "RESOURCE_EXHAUSTED", "insufficient_quota")


class ModelNotAllowed(MgError):
    kind = _kind("MODEL_NOT_ALLOWED", 403, "PERMISSION_DENIED", "permission_error")


class Forbidden(MgError):
    kind = _kind("FORBIDDEN", 403, "PERMISSION_DENIED", "permission_error")


class ModelNotFound(MgError):
    kind = _kind("MODEL_NOT_FOUND", 404, "NOT_FOUND", "invalid_request_error")


class NotFound(MgError):
    kind = _kind("NOT_FOUND", 404, "NOT_FOUND", "invalid_request_error")


class IdempotencyKeyReused(MgError):
    kind = _kind("IDEMPOTENCY_KEY_REUSED", 422, "FAILED_PRECONDITION", "invalid_request_error")


class RequestTooLarge(MgError):
    kind = _kind("REQUEST_TOO_LARGE", 413, "INVALID_ARGUMENT", "invalid_request_error")


class RateLimited(MgError):
    kind = _kind("RATE_LIMITED", 429, "RESOURCE_EXHAUSTED", "rate_limit_error")


class UpstreamError(MgError):
    kind = _kind("UPSTREAM_ERROR", 502, "UNAVAILABLE", "server_error")


class Unavailable(MgError):
    kind = _kind("UNAVAILABLE", 503, "UNAVAILABLE", "server_error")


class InsufficientStorage(MgError):
    """Hosted image files cannot be written (the data dir's disk is full, or the write failed)."""

    kind = _kind("INSUFFICIENT_STORAGE", 507, "RESOURCE_EXHAUSTED", "server_error")


class UpstreamTimeout(MgError):
    kind = _kind("UPSTREAM_TIMEOUT", 504, "DEADLINE_EXCEEDED", "server_error")


class Internal(MgError):
    kind = _kind("INTERNAL", 500, "INTERNAL", "server_error")


# Sharper codes: each is its general kind (same HTTP status, gRPC status and type, so a handler of
# the general kind handles it too) with a code that tells the caller exactly what went wrong.


class InvalidValue(BadRequest):
    """A field holds a value outside its allowed choices."""

    kind = _kind("INVALID_VALUE", 400, "INVALID_ARGUMENT", "invalid_request_error")


class PromptTooLong(BadRequest):
    """The prompt is longer than the model (or the gateway) takes."""

    kind = _kind("PROMPT_TOO_LONG", 400, "INVALID_ARGUMENT", "invalid_request_error")


class InvalidSize(BadRequest):
    """`size` is not WIDTHxHEIGHT, or has no exact equivalent in what the provider takes."""

    kind = _kind("INVALID_SIZE", 400, "INVALID_ARGUMENT", "invalid_request_error")


class UnsupportedSize(BadRequest):
    """`size` is well formed but not one the model's catalog entry offers."""

    kind = _kind("UNSUPPORTED_SIZE", 400, "INVALID_ARGUMENT", "invalid_request_error")


class UnsupportedQuality(BadRequest):
    """`quality` is not one the model's catalog entry offers."""

    kind = _kind("UNSUPPORTED_QUALITY", 400, "INVALID_ARGUMENT", "invalid_request_error")


class InvalidReferenceImage(BadRequest):
    """`reference_image` could not be fetched, decoded or accepted (unreadable, too large, refused
    address, or a format or size the provider cannot take)."""

    kind = _kind("INVALID_REFERENCE_IMAGE", 400, "INVALID_ARGUMENT", "invalid_request_error")


class InvalidMask(BadRequest):
    """An edit's mask (`mask`, or `providerOptions.openai.mask`) is not a PNG of the first image's size."""

    kind = _kind("INVALID_MASK", 400, "INVALID_ARGUMENT", "invalid_request_error")


class EditNotSupported(BadRequest):
    """The model has no edit endpoint for a `reference_image`."""

    kind = _kind("EDIT_NOT_SUPPORTED", 400, "INVALID_ARGUMENT", "invalid_request_error")


class ProviderRejectedRequest(BadRequest):
    """The provider refused the request as invalid (its own message is kept)."""

    kind = _kind("PROVIDER_REJECTED_REQUEST", 400, "INVALID_ARGUMENT", "invalid_request_error")


class UpstreamRateLimited(RateLimited):
    """The provider kept answering 429 after the gateway's retries; `Retry-After` is set."""

    kind = _kind("UPSTREAM_RATE_LIMITED", 429, "RESOURCE_EXHAUSTED", "rate_limit_error")


class ProviderNotConfigured(ModelNotFound):
    """The model's provider has no credentials on this gateway; the message names what to set.

    A 404, as OpenAI answers for a model an account cannot use, not a 503: retrying cannot help until
    an operator sets a key, and the OpenAI SDKs retry every 5xx (twice by default) but no 404; gRPC
    retry policies retry UNAVAILABLE, not NOT_FOUND."""

    kind = _kind("PROVIDER_NOT_CONFIGURED", 404, "NOT_FOUND", "invalid_request_error")


# Every error class, the general kinds first (see EDGE_DEFAULTS).
ALL_ERRORS: tuple[type[MgError], ...] = (
    BadRequest,
    ContentPolicyViolation,
    Unauthenticated,
    BudgetExceeded,
    Forbidden,
    ModelNotAllowed,
    NotFound,
    ModelNotFound,
    IdempotencyKeyReused,
    RequestTooLarge,
    RateLimited,
    UpstreamError,
    Unavailable,
    InsufficientStorage,
    UpstreamTimeout,
    Internal,
    InvalidValue,
    PromptTooLong,
    InvalidSize,
    UnsupportedSize,
    UnsupportedQuality,
    InvalidReferenceImage,
    InvalidMask,
    EditNotSupported,
    ProviderRejectedRequest,
    UpstreamRateLimited,
    ProviderNotConfigured,
)

# What the edge uses for an error it produced itself (no server envelope): HTTP status -> kind.
# The first kind listed for a status wins, so the general kinds come first in ALL_ERRORS.
EDGE_DEFAULTS: dict[int, ErrorKind] = {}
for _error in ALL_ERRORS:
    EDGE_DEFAULTS.setdefault(_error.kind.http_status, _error.kind)


Metadata = tuple[tuple[str, str | bytes], ...]


# gRPC and the google.rpc messages are imported where errors are rendered, not with this module:
# `mg serve` (the supervisor) reads the error table for the edge's Lua filter and must not carry
# the gRPC runtime (~25 MB) for it.


def _packed(
    message: status_pb2.Status | error_details_pb2.ErrorInfo | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    from google.protobuf import any_pb2

    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_grpc_status(error: MgError, headers: Metadata = ()) -> tuple[grpc.StatusCode, str, Metadata]:
    """(status code, message, trailing metadata) for aborting an RPC with `error`.

    `headers` are the response headers the request had gathered (x-request-id, rate-limit headers);
    on an error they travel as trailing metadata, which the transcoder surfaces as HTTP headers.
    """
    import grpc
    from google.protobuf import duration_pb2
    from google.rpc import error_details_pb2, status_pb2

    kind = error.kind
    code = grpc.StatusCode[kind.grpc_status]
    info = error_details_pb2.ErrorInfo(
        reason=error.code,
        domain=ERROR_DOMAIN,
        metadata={"http_status": str(kind.http_status), "type": kind.type, "param": error.param or ""},
    )
    status = status_pb2.Status(code=code.value[0], message=error.message)
    status.details.append(_packed(info))
    metadata: list[tuple[str, str | bytes]] = list(headers)
    if error.retry_after_s is not None:
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=error.retry_after_s))
        status.details.append(_packed(retry))
        metadata.append(("retry-after", str(error.retry_after_s)))
    metadata += [
        (STATUS_DETAILS_KEY, status.SerializeToString()),
        (HTTP_STATUS_KEY, str(kind.http_status)),
        # ensure_ascii keeps the header value printable ASCII with no newlines, as metadata requires.
        (ENVELOPE_KEY, json.dumps(error.envelope(), separators=(",", ":"), ensure_ascii=True)),
    ]
    return code, error.message, tuple(metadata)


def lua_constants() -> str:
    """What envoy/errors.lua takes from here: the table for errors Envoy produces itself (404 route,
    503, 504...), and the message for a call without a key."""
    rows = [
        f'  [{status}] = {{"{kind.type}", "{kind.code}"}},' for status, kind in sorted(EDGE_DEFAULTS.items())
    ]
    return "local DEFAULTS = {\n" + "\n".join(rows) + "\n}\n" + f'local MISSING_KEY = "{MISSING_KEY}"'


_BY_NAME = {error.__name__: error for error in ALL_ERRORS}
_BY_CODE = {error.kind.code: error for error in ALL_ERRORS}


def stream_error_event(error: MgError) -> bytes:
    """The JSON of the `error` event that ends a stream already under way (its HTTP status was sent
    with the first event): OpenAI's shape, the envelope with `"type": "error"`, which the OpenAI SDKs'
    stream iterators raise as an APIError carrying the envelope's fields."""
    return json.dumps({"type": "error", **error.envelope()}, separators=(",", ":")).encode()


def error_to_json(error: MgError) -> str:
    """A stored form of an error, so a call that joined another gets exactly the error it got."""
    return json.dumps(
        {
            "kind": type(error).__name__,
            "message": error.message,
            "param": error.param,
            "code": error.code,
            "retry_after_s": error.retry_after_s,
        }
    )


def error_from_json(text: str) -> MgError:
    data = json.loads(text)
    # The code the caller saw decides the class; the class name is the fallback.
    kind = _BY_CODE.get(data["code"]) or _BY_NAME.get(data["kind"], Internal)
    return kind(data["message"], param=data["param"], retry_after_s=data["retry_after_s"])
