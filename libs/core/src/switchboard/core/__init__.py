"""Switchboard core: the pieces every service shares (bus, events, settings, telemetry, gRPC, runtime)."""
