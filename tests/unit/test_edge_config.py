"""The edge's config as rendered from settings, and its admin socket as claimed before Envoy starts."""

from __future__ import annotations

import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from service.config import Settings, SettingsError, load_settings
from service.runtime.edge import render_config
from service.runtime.envoy_admin import AdminSocketError, admin_socket_path, claim_admin_socket


class StrictLoader(yaml.SafeLoader):
    """Refuses a mapping with a key twice: Envoy would silently keep the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        assert len(keys) == len(set(keys)), f"duplicate keys at line {node.start_mark.line + 1}: {keys}"
        return super().construct_mapping(node, deep)


def rendered(settings: Settings) -> dict[str, object]:
    return dict(yaml.load(render_config(settings, Path("/x.lua")), Loader=StrictLoader))


def test_the_rendered_config_says_each_thing_once() -> None:
    rendered(Settings())


def test_admin_is_a_private_unix_socket_in_the_data_dir(tmp_path: Path) -> None:
    config = rendered(replace(Settings(), data_dir=tmp_path))
    address = config["admin"]["address"]  # type: ignore[index]
    assert address == {"pipe": {"path": str(tmp_path / "run" / "envoy-admin.sock"), "mode": 0o600}}


def test_the_limits_come_from_settings(tmp_path: Path) -> None:
    settings = replace(
        Settings(), data_dir=tmp_path, envoy_max_heap_bytes=123456789, envoy_request_timeout_s=7.5
    )
    config = rendered(settings)
    monitors = config["overload_manager"]["resource_monitors"]  # type: ignore[index]
    assert monitors[0]["typed_config"]["max_heap_size_bytes"] == 123456789
    listener = config["static_resources"]["listeners"][0]  # type: ignore[index]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["request_timeout"] == "7.5s"


def test_an_admin_socket_path_too_long_for_a_unix_socket_is_refused(tmp_path: Path) -> None:
    settings = replace(Settings(), data_dir=tmp_path / ("d" * 110))
    with pytest.raises(AdminSocketError, match="MG_ENVOY_ADMIN_SOCKET"):
        admin_socket_path(settings)
    short = replace(settings, envoy_admin_socket=str(tmp_path / "admin.sock"))
    assert admin_socket_path(short) == tmp_path / "admin.sock"


def test_a_socket_left_by_a_dead_envoy_is_removed_and_its_directory_made_private(tmp_path: Path) -> None:
    path = tmp_path / "run" / "envoy-admin.sock"
    claim_admin_socket(path)  # nothing there yet: the directory is made, 0700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # bound, never listening: what a killed Envoy leaves
    claim_admin_socket(path)
    assert not path.exists()


def test_a_socket_a_live_envoy_listens_on_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "envoy-admin.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(AdminSocketError, match="already answers"):
            claim_admin_socket(path)
    assert path.exists()


def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "envoy-admin.sock"
    path.write_text("not a socket")
    with pytest.raises(AdminSocketError, match="not a socket"):
        claim_admin_socket(path)
    assert path.read_text() == "not a socket"


def test_edge_limits_must_be_positive() -> None:
    for environ in ({"MG_ENVOY_MAX_HEAP_BYTES": "0"}, {"MG_ENVOY_MAX_CONNECTIONS": "0"}):
        with pytest.raises(SettingsError, match=next(iter(environ))):
            load_settings(environ)
