"""response_format=url: hosted, signed, expiring URLs served by the gateway; the edge's body cap;
and S3-compatible storage shared by replicas."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from ulid import ULID

from service.hosting.blobs import LocalBlobStore
from service.hosting.urls import SIGNING_KEY_FILE, Hosting, signed_query
from tests.support.checks import assert_error, decode_png
from tests.support.gateway import GatewayProcess
from tests.support.redis_server import SHARED_URL, clear_prefix
from tests.support.s3_server import S3Server
from tests.support.sdk import openai_client

BODY = {"model": "local/sketch", "prompt": "a harbour at noon", "size": "512x512", "response_format": "url"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MG_MAX_REQUEST_BYTES": str(1024 * 1024), "MG_URL_TTL_S": "3"}
    process = GatewayProcess(tmp_path_factory.mktemp("hosted"), env).start()
    yield process
    process.stop()


def post(gw: GatewayProcess, body: Mapping[str, object], **headers: str) -> httpx.Response:
    return gw.generate(body, headers=headers)


def test_url_responses_point_at_signed_gateway_files(gw: GatewayProcess) -> None:
    response = post(gw, BODY)
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert "b64_json" not in item
    url = item["url"]
    assert url.startswith(f"{gw.http_url}/v1/files/file_")
    served = httpx.get(url)  # no Authorization: the signature is the credential
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert served.headers["cache-control"].startswith("private, max-age=")
    assert decode_png(served.content).size == (512, 512)


def test_the_sdk_gets_a_url(gw: GatewayProcess) -> None:
    client = openai_client(f"{gw.http_url}/v1", gw.key)
    result = client.images.generate(
        model="local/sketch", prompt="a kite", size="256x256", response_format="url"
    )
    assert result.data is not None and result.data[0].url is not None
    assert decode_png(httpx.get(result.data[0].url).content).size == (256, 256)


def test_tampered_expired_and_unknown_urls(gw: GatewayProcess) -> None:
    url = post(gw, BODY).json()["data"][0]["url"]
    parts = urlsplit(url)
    base = f"{gw.http_url}{parts.path}"
    exp, sig = parts.query.split("&")
    assert_error(httpx.get(f"{base}?{exp}&sig={sig.removeprefix('sig=')[:-2]}xx"), 403, "FORBIDDEN")
    later = int(exp.removeprefix("exp=")) + 3600
    assert_error(httpx.get(f"{base}?exp={later}&{sig}"), 403, "FORBIDDEN")  # stretched expiry
    assert_error(httpx.get(f"{gw.http_url}/v1/files/..%2Fmg.sqlite3?{exp}&{sig}"), 404, "NOT_FOUND", "id")
    time.sleep(3.5)  # MG_URL_TTL_S=3
    expired = assert_error(httpx.get(url), 403, "FORBIDDEN")
    assert "expired" in expired["message"]


def test_a_bad_signature_says_nothing_of_whether_the_file_exists(gw: GatewayProcess) -> None:
    url = post(gw, BODY).json()["data"][0]["url"]
    parts = urlsplit(url)
    known, unknown = parts.path.rsplit("/", 1)[-1], f"file_{ULID()}"
    exp, sig = signed_query(url)
    tampered = f"exp={exp}&sig={sig[:-2]}xx"
    answers = [
        assert_error(httpx.get(f"{gw.http_url}/v1/files/{file_id}?{query}"), 403, "FORBIDDEN")
        for file_id, query in [(known, tampered), (unknown, tampered), (unknown, parts.query)]
    ]
    assert len({a["message"] for a in answers}) == 1
    # a URL the gateway signed for a file that is gone (as after the retention) is a 404
    signer = Hosting(LocalBlobStore(gw.data_dir / "unused"), signing_key_of(gw), gw.http_url, ttl_s=60)
    assert_error(httpx.get(signer.url(unknown)), 404, "NOT_FOUND", "id")
    assert httpx.get(signer.url(known)).status_code == 200  # the same signer signs real URLs


def signing_key_of(gw: GatewayProcess) -> bytes:
    return (gw.data_dir / SIGNING_KEY_FILE).read_text().strip().encode()


def test_a_replay_gets_fresh_urls_to_the_same_files(gw: GatewayProcess) -> None:
    first = post(gw, BODY, **{"x-mg-idempotency-key": f"url-{ULID()}"})
    time.sleep(1.1)
    replay = post(gw, BODY, **{"x-mg-idempotency-key": first.request.headers["x-mg-idempotency-key"]})
    assert replay.headers["x-mg-idempotent-replay"] == "true"
    old, new = first.json()["data"][0]["url"], replay.json()["data"][0]["url"]
    assert urlsplit(old).path == urlsplit(new).path and old != new
    assert httpx.get(new).content == httpx.get(old).content


def test_bodies_over_the_cap_are_413_at_the_edge(gw: GatewayProcess) -> None:
    response = post(gw, {**BODY, "prompt": "p" * (2 * 1024 * 1024)})
    assert_error(response, 413, "REQUEST_TOO_LARGE")
    assert_error(post(gw, {**BODY, "prompt": "p" * (512 * 1024)}), 400, "PROMPT_TOO_LONG", "prompt")


# --- S3-compatible storage shared by two replicas


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


def test_replicas_share_files_through_s3(s3: S3Server, tmp_path: Path) -> None:
    bucket = f"mg-{str(ULID()).lower()}"
    s3.create_bucket(bucket)
    prefix = f"mg-test:{ULID()}:"
    shared = {
        **s3.env(bucket),
        "MG_REDIS_URL": SHARED_URL,
        "MG_REDIS_PREFIX": prefix,
        "MG_URL_SIGNING_KEY": "k" * 43,
    }
    first = GatewayProcess(tmp_path / "a", shared).start()
    try:
        second = GatewayProcess(tmp_path / "b", shared).start()
        try:
            key = first.new_key("replicas")
            response = httpx.post(
                f"{first.http_url}/v1/images/generations",
                headers={"Authorization": f"Bearer {key}"},
                json=BODY,
                timeout=60,
            )
            url = response.json()["data"][0]["url"]
            # the same file, through the other replica (whose S3 client makes its first call: a
            # generous timeout, as for the POST, since a loaded 2-vCPU CI machine once took > 5 s)
            other = url.replace(first.http_url, second.http_url)
            served = httpx.get(other, timeout=60)
            assert served.status_code == 200 and decode_png(served.content).size == (512, 512)
            keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
            assert keys == [f"mg/{urlsplit(url).path.rsplit('/', 1)[-1]}"]
            assert not (tmp_path / "a" / "files").exists()
        finally:
            second.stop()
            print(second.output_tail())  # pytest shows it if the test failed
    finally:
        first.stop()
        print(first.output_tail())
        clear_prefix(SHARED_URL, prefix)
