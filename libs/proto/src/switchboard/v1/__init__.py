"""Switchboard's contracts, generated from proto/switchboard/v1 by scripts/proto_codegen.sh."""
