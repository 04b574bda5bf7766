"""Tracing costs only trace ids until something exports spans (a fresh process: the tracer
provider is global)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from switchboard.core import telemetry

    telemetry.setup_tracing("probe")
    tracer = telemetry.tracer("probe")
    with tracer.start_as_current_span("unexported") as span:
        assert not span.is_recording()
        parent = telemetry.current_traceparent()
    assert parent and parent.split("-")[1] != "0" * 32  # still one trace, propagated
    with telemetry.continued({"traceparent": parent}):
        with tracer.start_as_current_span("child") as child:
            assert format(child.get_span_context().trace_id, "032x") == parent.split("-")[1]

    exporter = InMemorySpanExporter()
    telemetry.setup_tracing("probe", processor=SimpleSpanProcessor(exporter))
    with tracer.start_as_current_span("exported") as span:
        assert span.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["exported"]
    print("ok")
    """
)


def test_spans_are_recorded_only_once_something_exports_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


FORK_SCRIPT = textwrap.dedent(
    """
    import os
    import opentelemetry.sdk.trace as sdk_trace
    from switchboard.core import telemetry

    telemetry.setup_tracing("probe")
    detected = []
    sdk_trace._get_process_dependent_resource = lambda: detected.append(1)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        os._exit(1 if detected else 0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child re-detected the resource"
    """
)


def test_a_forked_child_starts_no_work_of_the_tracer() -> None:
    """A child forked to compute and exit (the router's snapshot writer) must not run the SDK's
    resource detection on a thread pool: in a child of a multi-threaded process that can crash."""
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


DELIVERY_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, tempfile
    from pathlib import Path
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from switchboard.core import events, telemetry
    from switchboard.core.bus import Bus
    from switchboard.core.embedded_nats import NatsServer
    from switchboard.v1 import contact_pb2, events_pb2

    SENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def created(cid):
        return events_pb2.ContactCreated(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "probe"),
            contact=contact_pb2.Contact(
                contact_id=cid, tenant="acme", channel=contact_pb2.CHANNEL_CHAT
            ),
        )

    async def handled(url, cid):
        bus = await Bus.connect(url, source="probe")
        seen = asyncio.get_running_loop().create_future()

        async def handler(event):
            if event.contact.contact_id == cid and not seen.done():
                seen.set_result(telemetry.current_traceparent())

        bus.subscribe(f"probe-{cid}", events_pb2.ContactCreated, handler)
        await bus.start()
        await bus.publish_async(created(cid), traceparent=SENT)
        parent = await asyncio.wait_for(seen, 20)
        await bus.drain()
        return parent

    async def main(folder):
        server = NatsServer(Path(folder)).start()
        try:
            telemetry.setup_tracing("probe")
            # Nothing exports: the handler runs in the event's own trace context.
            assert await handled(server.url, "c1") == SENT
            exporter = InMemorySpanExporter()
            telemetry.setup_tracing("probe", processor=SimpleSpanProcessor(exporter))
            # Exported: a CONSUMER span of the same trace, the event's span its parent.
            parent = await handled(server.url, "c2")
            assert parent.split("-")[1] == SENT.split("-")[1] and parent != SENT
            spans = [s for s in exporter.get_finished_spans() if s.name == "process ContactCreated"]
            assert spans and format(spans[0].parent.span_id, "016x") == SENT.split("-")[2]
        finally:
            server.stop()
        print("ok")

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(main(folder))
    """
)


def test_a_delivery_runs_in_the_events_trace_with_a_span_only_when_exported() -> None:
    """Until something exports spans, a consumer continues the event's trace context as it came
    (no span of its own, whose id nobody would see); once spans are exported, each delivery is a
    CONSUMER span, the event's span its parent."""
    done = subprocess.run(
        [sys.executable, "-c", DELIVERY_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_current_traceparent_is_what_the_propagator_writes() -> None:
    from switchboard.core import telemetry

    assert telemetry.current_traceparent() == ""
    for parent in (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    ):
        with telemetry.continued({"traceparent": parent}):
            assert telemetry.current_traceparent() == parent
            assert telemetry.current_traceparent() == telemetry.inject({})["traceparent"]
        with telemetry.continued({"traceparent": parent}):
            with telemetry.tracer("probe").start_as_current_span("child"):
                assert telemetry.current_traceparent() == telemetry.inject({})["traceparent"]
