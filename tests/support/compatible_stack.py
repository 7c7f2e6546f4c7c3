"""A gateway in front of several fakes of OpenAI-compatible servers, each a provider of its own
(`<name>/flux`, $0.01 an image, one image per upstream call), with what the test adds to each
provider's entry (limits, keys) and to the config file (aliases)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.openai_compatible import FakeCompatibleServer
from tests.support.gateway import GatewayProcess

MODEL = """\
  {name}/flux:
    provider: {name}
    upstream_id: flux-dev
    sizes: [1024x1024]
    default_size: 1024x1024
    max_images: 4
    max_images_per_call: 1
    price: {{default: "0.01"}}
"""


@dataclass
class CompatibleStack:
    gateway: GatewayProcess
    fakes: dict[str, FakeCompatibleServer]


@contextmanager
def compatible_stack(
    root: Path, entries: dict[str, str], aliases: str = "", env: dict[str, str] | None = None
) -> Iterator[CompatibleStack]:
    """`entries`: provider name -> what its entry adds (YAML flow entries, e.g. `max_in_flight: 2`)."""
    with ExitStack() as running:
        fakes = {name: FakeCompatibleServer() for name in entries}
        for fake in fakes.values():
            running.enter_context(fake.running())
        lines = ["providers:"]
        for name, extra in entries.items():
            entry = f'type: openai-compatible, base_url: "{fakes[name].url}/v1"'
            lines.append(f"  {name}: {{{entry}{', ' + extra if extra else ''}}}")
        lines.append("models:")
        lines += [MODEL.format(name=name).rstrip("\n") for name in entries]
        (root / "mg.yaml").write_text("\n".join(lines) + "\n" + aliases)
        gateway = GatewayProcess(root / "data", {**(env or {}), "MG_CONFIG": str(root / "mg.yaml")})
        gateway.start()
        running.callback(gateway.stop)
        yield CompatibleStack(gateway, fakes)
