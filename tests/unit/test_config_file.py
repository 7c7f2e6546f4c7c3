from __future__ import annotations

from pathlib import Path

import pytest

from service.catalog.catalog import catalog_for
from service.cli import check_config
from service.config import load_settings
from service.config_file import ConfigFileError

GOOD = """\
settings:
  http_port: 9100
  max_duration_s: 120
providers:
  openai:
    api_key_env: MY_OPENAI_KEY
    base_url: http://proxy.internal/v1
aliases:
  fast: local/sketch
models:
  local/sketch:
    price: {default: "0.005"}
  local/tiny:
    provider: local
    upstream_id: sketch
    sizes: [256x256]
    default_size: 256x256
    max_images: 2
    max_images_per_call: 1
    price: {default: "0.0001"}
"""


def write(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "mg.yaml"
    path.write_text(text)
    return {"MG_CONFIG": str(path)}


def test_the_file_sets_settings_providers_models_and_aliases(tmp_path: Path) -> None:
    settings = load_settings({**write(tmp_path, GOOD), "MY_OPENAI_KEY": "sk-1"})
    assert (settings.http_port, settings.max_duration_s) == (9100, 120.0)
    assert settings.providers["openai"].api_key == "sk-1"
    assert settings.providers["openai"].base_url == "http://proxy.internal/v1"
    catalog = catalog_for(settings)
    assert catalog.resolve("fast").id == "local/sketch"
    assert catalog.resolve("local/sketch").price.default_micros == 5000
    assert (
        catalog.resolve("local/sketch").capabilities.max_images_per_call == 4
    )  # kept from the shipped entry
    assert catalog.resolve("local/tiny").capabilities.max_images == 2
    assert check_config(settings).startswith("ok")


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    environ = {
        **write(tmp_path, GOOD),
        "MG_HTTP_PORT": "9200",
        "OPENAI_API_KEY": "sk-env",
        "MY_OPENAI_KEY": "x",
    }
    settings = load_settings(environ)
    assert settings.http_port == 9200 and settings.providers["openai"].api_key == "sk-env"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("settings:\n  http_port: 80\n  max_duration_s: soon\n", 3, "not a valid float"),
        ("settings:\n  colour: blue\n", 2, "unknown setting"),
        ("setting:\n  http_port: 1\n", 1, "unknown section"),
        ("providers:\n  dalle: {api_key: x}\n", 2, "unknown provider"),
        ("providers:\n  openai: {token: x}\n", 2, "takes only"),
        ("aliases:\n  fast: nobody/nothing\n", 2, "unknown model"),
        # routes: an alias whose value is a list of models, tried in order
        (
            "aliases:\n  hero:\n    - local/sketch\n    - nobody/nothing\n",
            4,
            "'nobody/nothing' is not a model",
        ),
        ("aliases:\n  hero: []\n", 2, "route 'hero' lists no targets"),
        ("aliases:\n  hero: [local/sketch, 7]\n", 2, "a target names a model"),
        ("aliases:\n  a: [local/sketch, b]\n  b:\n    - a\n", 4, r"refers back to 'a' \(a -> b -> a\)"),
        ("aliases:\n  a: [a]\n", 2, "refers back to 'a'"),
        ("aliases:\n  hero: [local/sketch, local/sketch]\n", 2, "lists local/sketch twice"),
        ("aliases:\n  local/sketch: [local/sketch]\n", 2, "has a model's name"),
        # provider limits and circuit breakers
        (
            "providers:\n  openai:\n    api_key: x\n    max_in_flight: -1\n",
            4,
            "max_in_flight must be a number >= 0",
        ),
        ("providers:\n  openai:\n    breaker_failures: many\n", 3, "breaker_failures must be a number"),
        ("providers:\n  openai:\n    max_in_flight: 2.5\n", 3, "max_in_flight must be a number"),
        ("providers:\n  openai:\n    max_queued: 5\n", 2, "a queue needs max_in_flight"),
        # several keys
        (
            "providers:\n  openai:\n    keys:\n      - {api_key: a}\n      - {api_key: b, weight: 0}\n",
            5,
            "weight must be a whole number >= 1, not 0",
        ),
        ("providers:\n  openai:\n    keys: []\n", 3, "keys must list one or more keys"),
        (
            "providers:\n  openai:\n    keys:\n      - {weight: 2}\n",
            4,
            "needs one of api_key and api_key_env",
        ),
        ("providers:\n  openai:\n    api_key: x\n    keys: [{api_key: a}]\n", 2, "give keys or one key"),
        ("models:\n  local/sketch:\n    default_size: 640x480\n", 2, "not offered"),
        ("settings: [1, 2\n", 2, "not valid YAML"),  # where the parser gave up
    ],
)
def test_mistakes_point_at_their_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    environ = write(tmp_path, text)
    with pytest.raises(ConfigFileError, match=rf"mg.yaml:{line}: .*{message}"):
        check_config(load_settings(environ))


def test_provider_limits_reach_the_provider_settings(tmp_path: Path) -> None:
    environ = write(
        tmp_path,
        "providers:\n  openai:\n    api_key: sk-x\n    max_in_flight: 3\n    breaker_failures: 4\n"
        "    breaker_cooldown_s: 7\n",
    )
    limits = load_settings(environ).providers["openai"].limits
    assert (limits.max_in_flight, limits.breaker_failures, limits.breaker_cooldown_s) == (3, 4, 7.0)
    assert limits.max_queued == 100  # the default


def test_several_keys_reach_the_provider_settings(tmp_path: Path) -> None:
    environ = write(
        tmp_path,
        "providers:\n  openai:\n    keys:\n      - {api_key_env: KEY_A, weight: 3, max_in_flight: 2}\n"
        "      - {api_key_env: KEY_UNSET}\n      - {api_key: sk-c, base_url: 'https://c.example/v1/'}\n",
    )
    environ["KEY_A"] = "sk-a"
    config = load_settings(environ).providers["openai"]
    assert config.api_key == "sk-a"  # the first key that is set
    assert [(k.label, k.api_key, k.weight, k.base_url, k.max_in_flight) for k in config.keys] == [
        ("KEY_A", "sk-a", 3, "", 2),
        ("key 3", "sk-c", 1, "https://c.example/v1", 0),  # (its variable unset: KEY_UNSET is left out)
    ]
