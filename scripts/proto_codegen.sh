#!/usr/bin/env bash
# Regenerates every protobuf and gRPC module in libs/proto from proto/, with the grpcio-tools and
# mypy-protobuf versions pinned in the workspace's dev group. `make proto-check` runs this and fails
# if anything changed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=libs/proto/src
include=$(python -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
rm -f "$out"/switchboard/v1/*_pb2*.py "$out"/switchboard/v1/*_pb2*.pyi
python -m grpc_tools.protoc -I proto -I "$include" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  proto/switchboard/v1/*.proto 2> >(grep -v "^Writing mypy" >&2)
echo "generated: $(ls "$out"/switchboard/v1/*_pb2*.py | wc -l) modules"
