"""OpenTelemetry setup and W3C trace-context propagation across NATS headers and gRPC metadata.

One contact is one trace: the channel starts it, the bus carries ``traceparent`` in each event's
headers, consumers continue it, and the router hands it to the agent inside each offer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

logger = logging.getLogger(__name__)

_provider: TracerProvider | None = None
_exporting = False  # a processor or exporter was added: spans are recorded from then on


class _RecordWhenExported(Sampler):
    """Spans cost only their ids until something exports them: without an exporter or a
    processor, every span is non-recording (no attributes, events or processor calls kept), while
    trace ids are still generated and propagated, so one contact stays one trace."""

    _recording = ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if not _exporting:
            return SamplingResult(Decision.DROP)
        return self._recording.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "RecordWhenExported"


class _Provider(TracerProvider):
    """The SDK's provider, without its work in a forked child: the SDK re-detects the process's
    resource there on a thread pool, and a child forked from a process with other threads alive
    (the router forks one to write each snapshot) can crash starting threads (seen: segfaults
    in the snapshot writer). Switchboard's children only compute and exit; spans keep the
    parent's resource."""

    def _handle_fork(self) -> None:
        self._tracers_lock = threading.Lock()


def setup_tracing(
    service_name: str, otlp_endpoint: str = "", processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install a tracer provider once per process; later calls add processors to it.

    With an OTLP endpoint, spans are exported there (when the OTLP exporter is installed); a test
    passes its own processor (an in-memory exporter).
    """
    global _provider, _exporting
    if _provider is None:
        _provider = _Provider(
            resource=Resource.create({"service.name": service_name}),
            sampler=_RecordWhenExported(),
        )
        trace.set_tracer_provider(_provider)
        if otlp_endpoint:
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                    OTLPSpanExporter,
                )
            except ImportError:
                logger.warning("OTLP endpoint set but opentelemetry-exporter-otlp is not installed")
            else:
                _provider.add_span_processor(
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
                )
                _exporting = True
    if processor is not None:
        _provider.add_span_processor(processor)
        _exporting = True
    return _provider


def exporting() -> bool:
    """Whether spans are recorded (a processor or exporter was added to this process's
    provider); until then a span would only carry ids that nothing ever sees."""
    return _exporting


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (traceparent, tracestate) into `carrier`."""
    propagate.inject(carrier)
    return carrier


def current_traceparent() -> str:
    """The W3C traceparent of the current span, as the trace-context propagator writes it ('' in
    no trace); read from the span itself, without running every propagator into a carrier."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


@contextmanager
def continued(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the trace context found in `carrier` current for the duration of the block."""
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        otel_context.detach(token)
