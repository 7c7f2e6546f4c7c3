"""The console's static files: what is served, at which path, with which cache rule; and that the
pages build the DOM from data as text only."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from service.console.files import ASSET_CACHE, INDEX_CACHE, ConsoleFiles

STATIC = Path(str(resources.files("service.console") / "static"))


def test_assets_are_served_under_their_digest_and_the_index_names_it() -> None:
    files = ConsoleFiles.load()
    index = files.get("")
    assert index is not None and index.cache_control == INDEX_CACHE
    page = index.data.decode()
    assert f'src="/console/{files.digest}/app.js"' in page
    assert "{{" not in page
    app = files.get(f"{files.digest}/app.js")
    assert app is not None and app.cache_control == ASSET_CACHE
    assert app.media_type.startswith("text/javascript")
    assert files.get("app.js") is None  # only under the digest: a cached copy is always current
    assert files.get(f"{files.digest}/vendor/uPlot.esm.js") is not None


def test_a_change_to_any_asset_is_a_new_digest(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="{{assets}}app.js"></script>')
    (tmp_path / "app.js").write_text("one")
    first = ConsoleFiles.load(tmp_path).digest
    assert ConsoleFiles.load(tmp_path).digest == first
    (tmp_path / "app.js").write_text("two")
    assert ConsoleFiles.load(tmp_path).digest != first


def test_nothing_outside_the_files_read_at_start_is_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("{{assets}}")
    (tmp_path / "LICENSE").write_text("text")
    (tmp_path / ".hidden.js").write_text("x")
    files = ConsoleFiles.load(tmp_path)
    assert files.paths() == ["", "index.html"]
    for path in ("../index.html", f"{files.digest}/../index.html", "/etc/passwd", f"{files.digest}/LICENSE"):
        assert files.get(path) is None


def test_the_index_says_whether_thumbnails_are_kept() -> None:
    def meta(files: ConsoleFiles) -> str:
        index = files.get("")
        assert index is not None
        found = re.search(r'<meta name="mg-thumbnails" content="(\w+)">', index.data.decode())
        assert found is not None
        return found.group(1)

    assert meta(ConsoleFiles.load(thumbnails=True)) == "on"
    assert meta(ConsoleFiles.load()) == "off"


def test_the_pages_never_parse_data_as_html() -> None:
    """Prompts, project names and every other string reach the page as text nodes (dom.js)."""
    own = [p for p in STATIC.rglob("*.js") if "vendor" not in p.parts]
    assert len(own) >= 6
    for path in own:
        source = path.read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in source, f"{path.name} uses {sink}"


def test_the_index_has_no_inline_script_or_style() -> None:
    page = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    assert "<style" not in page and "style=" not in page
    assert re.findall(r"\son[a-z]+=", page) == []  # no inline event handlers
