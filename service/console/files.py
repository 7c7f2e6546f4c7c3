"""The console's static files, read once from the package, and the headers every one is served with.

The files are plain ES modules, CSS and a vendored charting library (static/vendor/): no build step.
They are served under a path that names their content, `/console/<digest>/app.js`, so browsers may
keep them for good (a new version of the files is a new digest); only the index page, which names
the digest, is revalidated on every load. A path is served only if it is one of the files read at
start: nothing a caller sends becomes a file system path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

INDEX = "index.html"
# The index page names its assets through this placeholder, replaced by `/console/<digest>/` at load.
ASSETS_PLACEHOLDER = "{{assets}}"
# ... and tells the pages whether the gallery has thumbnails (MG_KEEP_THUMBNAILS) through this one.
THUMBNAILS_PLACEHOLDER = "{{thumbnails}}"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# Scripts, styles, images and API calls from the gateway's own origin only: no inline script or
# style, no other origin, no plugins, not framed by any page, forms post nowhere else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)
INDEX_CACHE = "no-cache"  # revalidated on every load, so a new version's digest is seen at once
ASSET_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class ConsoleFile:
    data: bytes
    media_type: str
    cache_control: str


class ConsoleFiles:
    """Every file of the console, by the path it is served at below /console/ ("" is the index)."""

    def __init__(self, files: dict[str, ConsoleFile], digest: str) -> None:
        self._files = files
        self.digest = digest

    @classmethod
    def load(cls, root: Traversable | None = None, *, thumbnails: bool = False) -> ConsoleFiles:
        root = root or resources.files("service.console") / "static"
        assets = dict(_walk(root))
        if INDEX not in assets:
            raise FileNotFoundError(f"the console has no {INDEX}")
        index = assets.pop(INDEX)
        digest = _digest(assets)
        files = {
            f"{digest}/{path}": ConsoleFile(data, _media_type(path), ASSET_CACHE)
            for path, data in assets.items()
        }
        page = index.replace(ASSETS_PLACEHOLDER.encode(), f"/console/{digest}/".encode()).replace(
            THUMBNAILS_PLACEHOLDER.encode(), b"on" if thumbnails else b"off"
        )
        files[""] = files[INDEX] = ConsoleFile(page, MEDIA_TYPES[".html"], INDEX_CACHE)
        return cls(files, digest)

    def get(self, path: str) -> ConsoleFile | None:
        return self._files.get(path.strip("/"))

    def paths(self) -> list[str]:
        return sorted(self._files)


def _walk(directory: Traversable, prefix: str = "") -> list[tuple[str, bytes]]:
    found = []
    for entry in directory.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.extend(_walk(entry, f"{prefix}{entry.name}/"))
        elif _suffix(entry.name) in MEDIA_TYPES:  # (licence texts and the like are not served)
            found.append((prefix + entry.name, entry.read_bytes()))
    return found


def _digest(assets: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for path in sorted(assets):
        h.update(path.encode() + b"\0" + hashlib.sha256(assets[path]).digest())
    return h.hexdigest()[:16]


def _suffix(name: str) -> str:
    return name[name.rfind(".") :] if "." in name else ""


def _media_type(path: str) -> str:
    return MEDIA_TYPES[_suffix(path)]
