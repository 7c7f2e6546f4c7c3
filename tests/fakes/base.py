"""The base of the fake provider servers: a real HTTP server on loopback that records every request,
validates bodies against the provider's own published schema, and answers as the provider would.

Deterministic triggers in the prompt, shared by every fake:
  BLOCKME      the provider's content-refusal answer
  RATELIMIT    429 every time;   RATELIMIT_ONCE  429 once per prompt, then success
  FAILME       500 every time;   FLAKY           503 once per prompt, then success
  GARBAGE      200 with a body that is not what the provider promises
  EMPTY        200 with no images
  SLOW         answer after SLOW_S (async providers: stay pending for a few polls)
  SLOWSTREAM   (streamed answers) a pause before each event

And settings a test sets on one fake (whatever the prompt), to fail one provider of a route:
  outage_status  answer every request with this HTTP status (429 with `Retry-After:
                 outage_retry_after`) and an error body; only those whose Authorization carries
                 `outage_key`, when it is set (one key of several); delay_s  wait this long before
                 answering. `most_in_flight` is the most requests it was answering at once.
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import io
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import jsonschema
from PIL import Image
from PIL.Image import Image as PILImage

SCHEMAS = Path(__file__).with_name("schemas")
# A SLOW answer's delay: far enough past the tests' 0.5 s deadlines that a busy CI machine's pauses
# cannot make an enforced deadline look missed.
SLOW_S = 3.0


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)  # multipart: name -> str or bytes (files)
    # When it arrived (time.monotonic()): what a test of waits between calls measures, free of the
    # client's own set-up time.
    at: float = field(default_factory=time.monotonic, compare=False)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # A streamed answer (server-sent events): each piece written after its pause (seconds), then the
    # connection closed; `body` is not sent.
    stream: list[tuple[float, bytes]] | None = None


def json_reply(payload: Any, status: int = 200, /, **headers: str) -> Reply:
    return Reply(status, json.dumps(payload).encode(), {"content-type": "application/json", **headers})


def png(width: int = 8, height: int = 8, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def decoded_picture(encoded: object) -> PILImage | None:
    """A base64 PNG or JPEG, decoded (as providers that take only those check it); None otherwise."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(str(encoded), validate=True))) as image:
            if image.format not in ("PNG", "JPEG"):
                return None
            image.load()
            return image.copy()
    except (ValueError, OSError):
        return None


def jpeg(width: int = 8, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 30, 200)).save(out, format="JPEG")
    return out.getvalue()


def webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 200, 30)).save(out, format="WEBP")
    return out.getvalue()


class SchemaViolation(Exception):
    """What the adapter sent does not match the provider's definition."""


def check_body(schema_file: str, definition: str, body: Any, *, closed: bool = True) -> None:
    """Validate against the provider's published schema; `closed` also refuses fields the schema does
    not define (the published schemas are open, but a misspelt field must fail a test)."""
    schema = json.loads((SCHEMAS / schema_file).read_text())
    try:
        jsonschema.validate(body, {**schema, "$ref": f"#/$defs/{definition}"})
    except jsonschema.ValidationError as exc:
        raise SchemaViolation(exc.message) from None
    if closed and isinstance(body, dict):
        known = set(schema["$defs"][definition].get("properties", {}))
        unknown = set(body) - known
        if unknown:
            raise SchemaViolation(f"fields not in {definition}: {sorted(unknown)}")


def check_written(schema: dict[str, Any], body: Any, what: str, defs_from: str = "") -> None:
    """Validate, closed as check_body does, against a definition written in a fake from a provider's
    prose docs (where it publishes no machine-readable one for that endpoint); `defs_from` names a
    schema file whose $defs it may refer to."""
    if not isinstance(body, dict):
        raise SchemaViolation(f"{what} must be an object")
    unknown = set(body) - set(schema["properties"])
    if unknown:
        raise SchemaViolation(f"fields not in {what}: {sorted(unknown)}")
    defs = json.loads((SCHEMAS / defs_from).read_text())["$defs"] if defs_from else {}
    try:
        jsonschema.validate(body, {**schema, "$defs": defs})
    except jsonschema.ValidationError as exc:
        raise SchemaViolation(exc.message) from None


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = bytes(part.get_payload(decode=True))
        form[str(name)] = payload if part.get_filename() else payload.decode()
    return form


def file_parts(content_type: str, body: bytes) -> dict[str, tuple[str, str]]:
    """name -> (filename, content type) of the parts of a multipart body that carry a filename."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    return {
        str(part.get_param("name", header="content-disposition")): (
            str(part.get_filename()),
            part.get_content_type(),
        )
        for part in message.iter_parts()
        if part.get_filename()
    }


class FakeProvider:
    """Subclasses implement `handle`; `url` is the base URL to give the adapter."""

    # The provider faked (its declaration's name), the key it accepts, what the provider's base URL
    # adds to the fake's root, and a public model and size that tests running every provider alike
    # (tests/e2e/test_providers.py, tests/providers/test_contract.py) generate with.
    PROVIDER: ClassVar[str]
    BASE_PATH: ClassVar[str] = ""
    SMOKE_MODEL: ClassVar[str]
    SMOKE_SIZE: ClassVar[str] = "1024x1024"
    api_key: str
    outage_status: int = 0
    outage_key: str = ""
    outage_retry_after: str = "1"
    delay_s: float = 0.0

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.seen: Counter[str] = Counter()  # trigger -> times seen (for the *_ONCE triggers)
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = cast(tuple[str, int], self._server.server_address[:2])
        return f"{'https' if self.tls_context() else 'http'}://{host}:{port}"

    def tls_context(self) -> ssl.SSLContext | None:
        """The server side of TLS for a fake served over https; None: plain http."""
        return None

    def handle(self, request: Recorded) -> Reply:
        raise NotImplementedError

    def settings(self) -> dict[str, str]:
        """The provider's optional variables that point it at this fake, beyond the credentials and
        the base URL (a credentials file whose token endpoint is this fake)."""
        return {}

    def reset(self) -> None:
        """Forget the requests and triggers seen, and the class-level settings a test changed on
        this instance, for a server reused across tests (subclasses extend it with their own
        state; tests/unit/test_fake_reset.py holds every fake to it)."""
        self.requests.clear()
        self.seen.clear()
        self.in_flight = self.most_in_flight = 0
        for name in [n for n in vars(self) if not n.startswith("_") and hasattr(type(self), n)]:
            delattr(self, name)  # the class's value shows again

    def once(self, key: str) -> bool:
        """True the first time `key` is seen."""
        with self._lock:
            self.seen[key] += 1
            return self.seen[key] == 1

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        recorded = Recorded(method, parts.path, parse_qs(parts.query), headers, body)
        content_type = headers.get("content-type", "")
        if content_type.startswith("application/json") and body:
            recorded.json = json.loads(body)
        elif content_type.startswith("multipart/form-data"):
            recorded.form = parse_multipart(content_type, body)
        with self._lock:
            self.requests.append(recorded)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            reply = self._outage_or_handle(recorded)
        finally:
            with self._lock:
                self.in_flight -= 1
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if reply.stream is not None:
            handler.send_header("connection", "close")
            handler.end_headers()
            handler.close_connection = True
            for pause, piece in reply.stream:
                time.sleep(pause)
                handler.wfile.write(piece)
                handler.wfile.flush()
            return
        handler.send_header("content-length", str(len(reply.body)))
        handler.end_headers()
        # (a caller that gave up before a slow answer, as the gateway does at a deadline, is gone)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            handler.wfile.write(reply.body)

    def _outage_or_handle(self, recorded: Recorded) -> Reply:
        time.sleep(self.delay_s)
        if self.outage_status and self.outage_key in recorded.headers.get("authorization", ""):
            retry = {"retry-after": self.outage_retry_after} if self.outage_status == 429 else {}
            return json_reply(
                {"error": {"message": "outage", "type": "server_error"}}, self.outage_status, **retry
            )
        try:
            return self.handle(recorded)
        except SchemaViolation as exc:
            return json_reply({"error": {"message": f"schema: {exc}", "type": "invalid_request_error"}}, 400)

    @contextmanager
    def running(self) -> Iterator[FakeProvider]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._dispatch(self, "GET")

            def do_POST(self) -> None:
                fake._dispatch(self, "POST")

            def do_PUT(self) -> None:  # fal cancels queue requests with PUT
                fake._dispatch(self, "PUT")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if (context := self.tls_context()) is not None:
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    def generation_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]


J = TypeVar("J")


class ClockedFake(FakeProvider, Generic[J]):
    """A fake of a submit-and-poll API whose jobs advance on the fake's own clock: each status read
    calls `tick()`, which moves it `tick_s` seconds, so a test makes a job take minutes by raising
    `tick_s` rather than by waiting. `jobs` (id -> the subclass's job) and `clock` are guarded by
    `_jobs_lock`."""

    tick_s = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, J] = {}
        self.clock = 0.0
        self._jobs_lock = threading.Lock()

    def reset(self) -> None:
        super().reset()
        with self._jobs_lock:
            self.jobs.clear()
            self.clock = 0.0

    def tick(self) -> float:
        """The clock, moved on by one status read (call with `_jobs_lock` held)."""
        self.clock += self.tick_s
        return self.clock
