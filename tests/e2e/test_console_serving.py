"""The console's files through the real edge: served at /console without credentials, with the
security and cache headers; turned off by MG_CONSOLE=false."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from service.console.files import CONTENT_SECURITY_POLICY
from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess, local_body


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("console-off"), {"MG_CONSOLE": "false"}).start()
    yield process
    process.stop()


def assets(index: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/console/[^"]+)"', index)


def test_the_index_and_its_assets_are_served_with_a_strict_policy(gateway: GatewayProcess) -> None:
    for path in ("/console", "/console/"):
        page = httpx.get(gateway.http_url + path)  # no Authorization: the files hold no data
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "'unsafe-inline'" not in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-cache"
    linked = assets(page.text)
    assert len(linked) == 3
    for path in linked:
        asset = httpx.get(gateway.http_url + path)
        assert asset.status_code == 200, path
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert asset.headers["content-type"].startswith(("text/javascript", "text/css"))


def test_unknown_and_escaping_paths_are_404(gateway: GatewayProcess) -> None:
    for path in (
        "/console/nope.js",
        "/console/app.js",
        "/console/..%2F..%2Fetc%2Fpasswd",
        "/console/vendor/uPlot.LICENSE",
    ):
        assert_error(httpx.get(gateway.http_url + path), 404, "NOT_FOUND", "path")


def test_a_thumbnail_needs_the_admin(gateway: GatewayProcess) -> None:
    url = f"{gateway.http_url}/v1/admin/thumbnails/01J00000000000000000000000/0"
    assert_error(httpx.get(url), 401, "UNAUTHENTICATED")
    assert_error(httpx.get(url, headers={"Authorization": f"Bearer {gateway.key}"}), 401, "UNAUTHENTICATED")


def test_mg_console_false_turns_it_off(off: GatewayProcess) -> None:
    for path in ("/console", "/console/", "/console/index.html"):
        assert_error(httpx.get(off.http_url + path), 404, "NOT_FOUND")
    thumbnail = httpx.get(f"{off.http_url}/v1/admin/thumbnails/01J00000000000000000000000/0")
    assert_error(thumbnail, 404, "NOT_FOUND")


@pytest.fixture(scope="module")
def keeping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MG_KEEP_THUMBNAILS": "true", "MG_LOG_PROMPTS": "false"}
    process = GatewayProcess(tmp_path_factory.mktemp("console-thumbnails"), env).start()
    yield process
    process.stop()


def test_thumbnails_are_kept_beside_hosted_files_only_when_asked(
    keeping: GatewayProcess, gateway: GatewayProcess
) -> None:
    body = {**local_body(prompt="a lighthouse"), "n": 2}
    made = keeping.generate(body)
    assert made.status_code == 200, made.text
    request_id = made.headers["x-request-id"]
    files = keeping.data_dir / "files"
    for index in (0, 1):
        with Image.open(files / f"thumb_{request_id}_{index}") as thumbnail:
            assert thumbnail.format == "WEBP" and max(thumbnail.size) <= 256
    assert not (files / f"thumb_{request_id}_2").exists()
    assert (files / f"thumb_{request_id}_0").stat().st_mode & 0o777 == 0o600
    # the retention sweep (here forced by the CLI) deletes them with the hosted files
    keeping.mg("files", "sweep", "--older-than", "0s")
    assert list(files.glob("thumb_*")) == []
    assert gateway.generate(local_body()).status_code == 200
    assert list((gateway.data_dir / "files").glob("thumb_*")) == []
