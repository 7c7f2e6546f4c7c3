"""The `mg` command: `mg serve` runs the gateway; `mg envoy-config` prints the edge config."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from pathlib import Path

from service.config import Settings, SettingsError, load_settings
from service.edge import render_config, render_lua
from service.supervisor import serve

DEV_KEY_FILE = "dev-api-key"
SAVE_FIRST_IMAGE = (
    "python3 -c 'import base64,json,sys; "
    'open("image.png","wb").write(base64.b64decode(json.load(sys.stdin)["data"][0]["b64_json"]))\''
)


def _dev_key(settings: Settings) -> str:
    """A key for trying the gateway out; kept in the data dir so restarts print the same one."""
    path = settings.data_dir / DEV_KEY_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("mg_live_" + secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _print_ready(settings: Settings) -> None:
    base = f"http://{'127.0.0.1' if settings.http_host in ('0.0.0.0', '') else settings.http_host}"
    base += f":{settings.http_port}"
    key = _dev_key(settings)
    print(
        f"""
mg is ready
  REST (OpenAI-compatible): {base}/v1
  gRPC:                     {settings.grpc_host}:{settings.grpc_port}  (mg.v1.ImageGeneration)
  API key:                  {key}
    (development key: until projects and keys are configured, any bearer token is accepted)

Try it:
  curl -s {base}/v1/images/generations \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "local/sketch", "prompt": "a lighthouse at dusk", "size": "512x512"}}' \\
    | {SAVE_FIRST_IMAGE}
""",
        flush=True,
    )


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    return serve(settings, _print_ready, with_envoy=not args.no_envoy)


def _cmd_envoy_config(settings: Settings, args: argparse.Namespace) -> int:
    """Write envoy.yaml + errors.lua for running Envoy apart from `mg serve` (docker-compose)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lua = out / "errors.lua"
    lua.write_text(render_lua())
    (out / "envoy.yaml").write_text(render_config(settings, Path(args.lua_path or lua.resolve())))
    print(out / "envoy.yaml")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mg", description="mg image-generation gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="run the gateway (gRPC workers + Envoy) on MG_* settings"
    )
    serve_parser.add_argument(
        "--no-envoy", action="store_true", help="run only the gRPC workers (Envoy runs elsewhere)"
    )
    envoy = commands.add_parser("envoy-config", help="write the Envoy config for these settings")
    envoy.add_argument("--out", required=True, help="directory for envoy.yaml and errors.lua")
    envoy.add_argument("--lua-path", help="where Envoy will find errors.lua (default: in --out)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"mg: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    handlers = {"serve": _cmd_serve, "envoy-config": _cmd_envoy_config}
    return handlers[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
