"""An in-memory span exporter installed on the process's tracer provider."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from switchboard.core import telemetry

_exporter: InMemorySpanExporter | None = None


def memory_exporter() -> InMemorySpanExporter:
    global _exporter
    if _exporter is None:
        _exporter = InMemorySpanExporter()
        telemetry.setup_tracing("switchboard-tests", processor=SimpleSpanProcessor(_exporter))
    return _exporter
