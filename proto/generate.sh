#!/usr/bin/env bash
# Generates code from proto/ with grpcio-tools' bundled protoc.
#   generate.sh             Python stubs ($OUT/python/mg) + Envoy descriptor set ($OUT/python/mg/mg.pb)
#   generate.sh typescript  TypeScript messages + service descriptors ($TS_OUT, default $OUT/typescript),
#                           via protoc-gen-es; callers need @bufbuild/protobuf and @connectrpc/connect-node
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
OUT=${OUT:-gen}
PY="$VENV/bin/python"
# googleapis-common-protos ships google/api/*.proto and google/rpc/*.proto beside its modules;
# grpc_tools ships google/protobuf/*.proto.
SITE=$("$PY" -c 'import google.api.http_pb2 as m, os; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')
WKT=$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
PROTOS=$(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
protoc() { "$PY" -m grpc_tools.protoc -Iproto -I"$SITE" -I"$WKT" "$@"; }

case "${1:-python}" in
python)
  rm -rf "$OUT/python" && mkdir -p "$OUT/python"
  protoc --python_out="$OUT/python" --pyi_out="$OUT/python" --grpc_python_out="$OUT/python" $PROTOS
  # make the generated tree importable as the top-level package `mg` (its proto package)
  find "$OUT/python" -type d -exec touch {}/__init__.py \;
  rm -f "$OUT/python/__init__.py"
  # The descriptor set Envoy's transcoder loads, inside the generated package (the wheel ships it
  # with the stubs). google/rpc/* lets convert_grpc_status print details.
  protoc --include_imports --include_source_info --descriptor_set_out="$OUT/python/mg/mg.pb" \
    $PROTOS google/rpc/status.proto google/rpc/error_details.proto
  # Put the generated package on the virtualenv's path.
  SITE_PACKAGES=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$(cd "$OUT/python" && pwd)" > "$SITE_PACKAGES/mg_generated.pth"
  echo "generated $OUT/python (with the descriptor set mg/mg.pb)"
  ;;
typescript)
  TS_TOOLS=tests/clients/typescript
  (cd "$TS_TOOLS" && npm ci --silent --no-audit --no-fund)
  TS_OUT=${TS_OUT:-$OUT/typescript}
  rm -rf "$TS_OUT" && mkdir -p "$TS_OUT"
  protoc --plugin=protoc-gen-es="$TS_TOOLS/node_modules/.bin/protoc-gen-es" \
    --es_out="$TS_OUT" --es_opt=target=js+dts,import_extension=js $PROTOS \
    google/api/annotations.proto google/api/http.proto google/api/httpbody.proto google/api/field_behavior.proto
  echo "generated $TS_OUT"
  ;;
*) echo "usage: $0 [python|typescript]" >&2; exit 2 ;;
esac
