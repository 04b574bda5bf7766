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
