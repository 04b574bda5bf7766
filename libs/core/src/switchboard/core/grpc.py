"""gRPC helpers: a server with health, reflection and Switchboard's interceptor, and client channels,
over TLS (mutual TLS between services) when certificates are configured (`switchboard.core.tls`).

The server interceptor, for every RPC but health (and reflection, unless it requires a token), of
every kind:
- authenticates the caller's bearer token and makes its Principal current (``principal()``);
- refuses, with FAILED_PRECONDITION, a caller whose tenant this server does not serve (the
  service's `tenant_gate`: a router group serves only its own tenants);
- authorises the call by the role table (switchboard.core.roles): a method without a rule, or a
  caller the rule does not admit, is refused with PERMISSION_DENIED before the servicer runs;
- continues the caller's trace from the ``traceparent`` metadata in a SERVER span;
- turns domain errors into status codes (InvalidArgument -> INVALID_ARGUMENT naming the field, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import SpanKind, Status, StatusCode

from switchboard.core import auth, metrics, roles, telemetry
from switchboard.core.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from switchboard.core.health import Readiness
from switchboard.core.settings import ServiceSettings
from switchboard.core.tls import GrpcTls

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

# The authenticated caller of the current RPC and the rule that admitted it.
_caller: contextvars.ContextVar[tuple[auth.Principal, roles.Rule] | None] = contextvars.ContextVar(
    "switchboard_caller", default=None
)

STATUS_OF: list[tuple[type[DomainError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]

_HEALTH = "/grpc.health.v1."
_REFLECTION = "/grpc.reflection."


def _current() -> tuple[auth.Principal, roles.Rule]:
    caller = _caller.get()
    if caller is None:
        raise Unauthenticated("no authenticated caller")
    return caller


def principal() -> auth.Principal:
    """The authenticated caller of the current RPC."""
    return _current()[0]


def acting_for(agent_id: str) -> auth.Principal:
    """Check that the caller may make the current RPC for agent `agent_id`: an `own` role of its
    rule acts only for itself, the others for any agent. Returns the caller."""
    p, rule = _current()
    if not agent_id:
        raise InvalidArgument("agent_id")
    if not rule.may_act_for(p, agent_id):
        raise PermissionDenied(f"{p.subject!r} may not act for agent {agent_id!r}")
    return p


def for_anyone() -> auth.Principal:
    """Check that the caller may make the current RPC without naming itself as the agent."""
    p, rule = _current()
    if not rule.for_anyone(p):
        raise PermissionDenied(f"{p.subject!r} may make this call only for itself: set agent_id")
    return p


def require_rule(name: str) -> auth.Principal:
    """Check the caller against the table's rule `name` (``<method>:<sub-action>``)."""
    p = principal()
    rule = roles.rule_for(name)
    if rule is None or not rule.admits(p):
        raise PermissionDenied(f"{name.lstrip('/')} is not allowed to {p.subject!r}")
    return p


def status_for(exc: DomainError) -> grpc.StatusCode:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.UNKNOWN


def require(request: Any, *fields: str) -> None:
    """Raise InvalidArgument naming the first of `fields` that is empty in `request`."""
    for name in fields:
        if not getattr(request, name):
            raise InvalidArgument(name)


# Why this server does not serve a tenant's calls (None: it does).
TenantGate = Callable[[str], "str | None"]


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        secret: str,
        known_tenants: frozenset[str] | None = None,
        token_max_lifetime: int | None = None,
        revocations: auth.Revoked | None = None,
        reflection_requires_token: bool = False,
        tenant_gate: TenantGate | None = None,
    ) -> None:
        self._verify = auth.Verifier(secret, known_tenants, token_max_lifetime, revocations)
        self._open = (_HEALTH,) if reflection_requires_token else (_HEALTH, _REFLECTION)
        self._gate = tenant_gate

    def _authenticate(self, metadata: dict[str, str]) -> auth.Principal:
        header = metadata.get("authorization", "")
        if not header.startswith("Bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        return self._verify(header[len("Bearer ") :])

    def _admit(self, method: str, metadata: dict[str, str]) -> tuple[auth.Principal, roles.Rule]:
        """The caller and the rule that lets it call `method`, or PermissionDenied."""
        p = self._authenticate(metadata)
        if method.startswith(_REFLECTION):  # any valid token may list the services
            return p, roles.Rule(roles=p.roles)
        if self._gate is not None:
            refused = self._gate(p.tenant)
            if refused:
                raise FailedPrecondition(refused)
        rule = roles.rule_for(method)
        if rule is None:
            raise PermissionDenied(f"{method.lstrip('/')} has no access rule")
        if not rule.admits(p):
            held = ", ".join(sorted(p.roles | p.scopes))
            raise PermissionDenied(f"{method.lstrip('/')} is not allowed to {held}")
        return p, rule

    async def intercept_service(
        self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(self._open):
            return handler
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        interceptor = self

        def scope(
            context: grpc.aio.ServicerContext, stream: bool = False, requests: Any = None
        ) -> _RpcScope:
            return _RpcScope(interceptor, method, metadata, context, stream, requests)

        # Every kind of RPC, by whether its requests and its responses are streams.
        for kind, make, streams_requests, streamed in _KINDS:
            inner = getattr(handler, kind)
            if inner:
                wrap = _streaming if streamed else _answering
                wrapped = wrap(inner, scope, streams_requests)
                return make(  # type: ignore[no-any-return]
                    wrapped,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, False, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, True, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True, True),
)
Scope = Callable[..., "_RpcScope"]


def _answering(
    inner: Callable[..., Any], scope: Scope, streams_requests: bool
) -> Callable[..., Any]:
    """`inner` (one response) inside the RPC's scope; its request may be a stream."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with scope(context, requests=request if streams_requests else None):
            return await inner(request, context)

    return call


def _streaming(
    inner: Callable[..., Any], scope: Scope, streams_requests: bool
) -> Callable[..., Any]:
    """`inner` (a stream of responses) inside the RPC's scope, for as long as it streams."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with scope(context, stream=True, requests=request if streams_requests else None):
            async for item in inner(request, context):
                yield item

    return call


# How long a refused RPC whose requests are a stream waits for the caller's first message before
# its status is sent (see _RpcScope._refuse); a caller that writes first never waits.
REFUSAL_FIRST_MESSAGE_WAIT = 5.0


class _RpcScope:
    """Authenticates, traces and maps errors for one RPC."""

    def __init__(
        self,
        interceptor: ServerInterceptor,
        method: str,
        metadata: dict[str, str],
        context: grpc.aio.ServicerContext,
        stream: bool = False,
        requests: AsyncIterator[Any] | None = None,
    ) -> None:
        self.i = interceptor
        self.stream = stream
        self.requests = requests
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.method = method
        self.metadata = metadata
        self.context = context
        self._stack: list[Any] = []

    async def __aenter__(self) -> None:
        trace_cm = telemetry.continued(self.metadata)
        trace_cm.__enter__()
        self._stack.append(trace_cm)
        span_cm = _tracer.start_as_current_span(
            self.method.lstrip("/"), kind=SpanKind.SERVER, attributes={"rpc.system": "grpc"}
        )
        self.span = span_cm.__enter__()
        self._stack.append(span_cm)
        try:
            self._token = _caller.set(self.i._admit(self.method, self.metadata))
        except DomainError as exc:
            try:
                await self._refuse(exc)
            finally:
                self._measure()
                self._close()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if isinstance(exc, DomainError):
                await self._abort(exc)
            elif exc is not None and not isinstance(exc, (grpc.aio.AbortError, GeneratorExit)):
                self.code = grpc.StatusCode.UNKNOWN
                self.span.record_exception(exc)
                self.span.set_status(Status(StatusCode.ERROR, str(exc)))
            return False
        finally:
            self._measure()
            if hasattr(self, "_token"):
                _caller.reset(self._token)
            self._close()

    def _measure(self) -> None:
        name = self.method.rsplit("/", 1)[-1]
        metrics.RPCS.labels(name, self.code.name).inc()
        if not self.stream:
            metrics.RPC_SECONDS.labels(name).observe(time.perf_counter() - self.started)

    def _close(self) -> None:
        while self._stack:
            self._stack.pop().__exit__(None, None, None)

    async def _refuse(self, exc: DomainError) -> None:
        """End an RPC its caller may not make. One whose requests are a stream is ended once its
        first message (or the end of its requests) has arrived, not before: a grpc.aio client
        writing that message while the refusal comes in loses the status to its failed write (it
        reads INTERNAL "Failed execute_batch" instead of, say, PERMISSION_DENIED, or its write
        raises), and a client told its session is refused stops, where one told INTERNAL retries."""
        if self.requests is not None:
            with contextlib.suppress(Exception):  # whatever the caller sent, it is refused
                await asyncio.wait_for(
                    anext(aiter(self.requests), None), REFUSAL_FIRST_MESSAGE_WAIT
                )
        await self._abort(exc)

    async def _abort(self, exc: DomainError) -> None:
        code = status_for(exc)
        self.code = code
        self.span.set_status(Status(StatusCode.ERROR, str(exc)))
        self.span.set_attribute("rpc.grpc.status_code", code.value[0])
        await self.context.abort(code, str(exc))


class BusConnection(Protocol):
    def watch(self, callback: Callable[[bool], Awaitable[None]]) -> None: ...


async def start_server(
    servicers: Iterable[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]],
    host: str,
    port: int,
    secret: str,
    known_tenants: frozenset[str] | None = None,
    bus: BusConnection | None = None,
    not_ready: dict[str, str] | None = None,
    token_max_lifetime: int | None = None,
    revocations: auth.Revoked | None = None,
    tls: GrpcTls | None = None,
    reflection_requires_token: bool = False,
    tenant_gate: TenantGate | None = None,
) -> tuple[grpc.aio.Server, int, Readiness]:
    """Start a grpc.aio server with `servicers` (add_fn, servicer, full service name), health and
    reflection (open, or to callers with a valid token), over TLS when `tls` has a certificate.
    Returns the server, the bound port (port 0 picks a free one) and the service's
    Readiness: SERVING while every condition holds. With a `bus`, its connection is the
    condition "nats"; a service adds its own (`readiness.set("leader", False, why)`), and names
    in `not_ready` those that do not hold yet when the server starts. Tokens that never expire,
    or live longer than `token_max_lifetime` seconds, are refused when it is set, and tokens
    `revocations` names revoked. Callers of a tenant `tenant_gate` refuses get
    FAILED_PRECONDITION with its reason."""
    server = grpc.aio.server(
        interceptors=[
            ServerInterceptor(
                secret,
                known_tenants,
                token_max_lifetime,
                revocations,
                reflection_requires_token,
                tenant_gate,
            )
        ],
        options=[("grpc.so_reuseport", 0), *_keepalive(), *_server_pings()],
    )
    names = [reflection.SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    served = []
    for add, servicer, name in servicers:
        add(servicer, server)
        names.append(name)
        served.append(name)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(names, server)
    credentials = tls.server_credentials() if tls else None
    address = f"{host}:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"cannot bind gRPC server to {host}:{port}")
    await server.start()
    readiness = Readiness(health, names, service=",".join(served))
    for condition, why in (not_ready or {}).items():
        await readiness.set(condition, False, why)
    await readiness.set("started", True)
    if bus is not None:

        async def nats_changed(connected: bool) -> None:
            await readiness.set("nats", connected, "" if connected else "NATS connection lost")

        bus.watch(nats_changed)
    return server, bound, readiness


async def start_health_server(
    readiness: Readiness, host: str, port: int
) -> tuple[grpc.aio.Server, int]:
    """A plaintext server of the health service alone, following `readiness`: for probes that
    cannot speak TLS (Kubernetes' gRPC probes) while the service's own server requires it."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *_server_pings()])
    health_pb2_grpc.add_HealthServicer_to_server(readiness.health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC health server to {host}:{port}")
    await server.start()
    return server, bound


async def start_service_server(
    settings: ServiceSettings,
    servicers: Iterable[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]],
    bus: BusConnection | None = None,
    not_ready: dict[str, str] | None = None,
    revocations: auth.Revoked | None = None,
    tenant_gate: TenantGate | None = None,
) -> tuple[grpc.aio.Server, int, Readiness]:
    """`start_server` where a service's settings say: address, secret, tenants, token lifetime,
    TLS and reflection."""
    return await start_server(
        servicers,
        settings.grpc_host,
        settings.grpc_port,
        settings.auth_secret,
        settings.known_tenants,
        bus=bus,
        not_ready=not_ready,
        token_max_lifetime=settings.token_max_lifetime,
        revocations=revocations,
        tls=settings.grpc_tls(),
        reflection_requires_token=settings.grpc_reflection_requires_token,
        tenant_gate=tenant_gate,
    )


async def stop_server(server: grpc.aio.Server, grace: float) -> None:
    """Stop `server`, letting calls in flight finish for `grace` seconds, and never wait much
    longer: grpc.aio's own stop can hang when a call ends just as shutdown begins (seen with an
    idle server under load), and one stuck step must not hold a service's shutdown."""
    stopping = asyncio.ensure_future(server.stop(grace))
    try:
        await asyncio.wait_for(asyncio.shield(stopping), grace + 5)
    except TimeoutError:
        logger.warning("gRPC server did not stop within %.0fs of its grace; going on", grace + 5)


# ---- clients ----------------------------------------------------------------------------------


Token = str | Callable[[], str] | None


class _CallDetails:
    """Adds the bearer token and trace context to a call, and a default deadline."""

    def __init__(self, token: Token, default_timeout: float | None) -> None:
        self._token = token
        self._timeout = default_timeout

    def _metadata(self, given: Any) -> grpc.aio.Metadata:
        metadata = grpc.aio.Metadata(*(given or ()))
        token = self._token() if callable(self._token) else self._token
        if token and "authorization" not in metadata:
            metadata.add("authorization", f"Bearer {token}")
        if "traceparent" not in metadata:
            for key, value in telemetry.inject({}).items():
                metadata.add(key, value)
        return metadata

    def _details(self, details: Any) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout if details.timeout is not None else self._timeout,
            self._metadata(details.metadata),
            details.credentials,
            details.wait_for_ready,
        )


# The header the router sends on an agent's StreamOffers or AgentSession as soon as the stream is
# open, before any offer: a client that reconnected knows offers can reach it again.
OFFERS_OPEN = "switchboard-offers-open"


# grpc.aio files an interceptor under the first interceptor type it is, so one class per kind.
class _UnaryUnary(_CallDetails, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_CallDetails, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamingRequests:
    """A client-streaming or bidirectional call that carries the token and trace context as it
    is made. Not an interceptor: grpc.aio relays every message of an intercepted streaming call
    through a queue and a task of its own (with a wait on two tasks for each message written),
    which cost an agent's session more than the messages themselves."""

    def __init__(self, call: Any, details: _CallDetails) -> None:
        self._call = call
        self._with = details

    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._call(
            request_iterator,
            timeout=timeout if timeout is not None else self._with._timeout,
            metadata=self._with._metadata(metadata),
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


class _StreamStream(_StreamingRequests, grpc.aio.StreamStreamMultiCallable):  # type: ignore[misc]
    pass


class _StreamUnary(_StreamingRequests, grpc.aio.StreamUnaryMultiCallable):  # type: ignore[misc]
    pass


class _Channel(grpc.aio.Channel):
    """A channel whose every call carries the token and trace context: unary requests through
    interceptors, streaming requests as they are made (see `_StreamingRequests`)."""

    def __init__(self, inner: grpc.aio.Channel, streams: _CallDetails) -> None:
        self._inner = inner
        self._streams = streams

    async def __aenter__(self) -> _Channel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._inner.channel_ready()

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.unary_unary(*args, **kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.unary_stream(*args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _StreamUnary(self._inner.stream_unary(*args, **kwargs), self._streams)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _StreamStream(self._inner.stream_stream(*args, **kwargs), self._streams)


# The longest pause between a channel's attempts to reach a service that went away. gRPC's own
# default grows to two minutes (1 s, 1.6 s, 2.6 s...): a router that came back after a restart
# of half a minute was reached by its clients (every agent's desk, the gateways) up to a quarter
# of a minute later. Capped, they are back within about a second of it.
RECONNECT_BACKOFF_MAX_MS = 1000

# How long one connection attempt may take before it is given up and another made. gRPC's own
# default is 20 s: an attempt to an address that drops packets rather than refusing them (the
# pod of a node that died, still behind its Service until the endpoints change, or a cut
# network) held the client for 20 s, and the attempt after it, to the new leader, came only then.
# Inside a cluster a connection (TLS included) takes milliseconds.
CONNECT_TIMEOUT_MS = 5000

# Keepalive: each end of a connection with a call open (an agent's offers stream, a wallboard's
# watch) pings the other every KEEPALIVE_TIME_MS and drops the connection when a ping is not
# answered within KEEPALIVE_TIMEOUT_MS. A peer that vanished without closing its connection (its
# machine died, its network was cut) is found out within their sum: an idle stream sends
# nothing, so without pings neither end would ever know.
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000


def _keepalive() -> list[tuple[str, Any]]:
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # The wait for a ping's answer that gRPC core enforces (its default is a minute; the
        # keepalive timeout alone does not shorten it).
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # However long the stream stays quiet (an agent waiting an hour for an offer).
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _server_pings() -> list[tuple[str, Any]]:
    """What a server lets its clients do: ping it as often as every half of KEEPALIVE_TIME_MS.
    gRPC's default takes one ping in five minutes without data and drops a client that pings
    more often (GOAWAY "too_many_pings"): with it, every quiet stream would end after 30 s."""
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def _open_channel(
    target: str,
    tls: GrpcTls | None,
    interceptors: list[Any] | None = None,
    server_name: str = "",
) -> grpc.aio.Channel:
    options: list[tuple[str, Any]] = [
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
        # gRPC core's name for the shortest connection attempt ("min connect timeout").
        ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
        *_keepalive(),
    ]
    credentials = tls.channel_credentials() if tls else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options, interceptors=interceptors)
    # A replica reached by its address is verified against its Service's name.
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, credentials, options, interceptors=interceptors)


def channel(
    target: str,
    token: Token = None,
    default_timeout: float = 10.0,
    tls: GrpcTls | None = None,
    server_name: str = "",
) -> grpc.aio.Channel:
    """A channel to `target` that sends `token` (or what a token provider gives for each call)
    and trace context, with deadlines; over TLS when `tls` has a CA (mutual TLS with its
    certificate, checked against `server_name` when given: `target` is then an address)."""
    # Streams such as StreamOffers live as long as the agent is signed in: no default deadline.
    inner = _open_channel(
        target, tls, [_UnaryUnary(token, default_timeout), _UnaryStream(token, None)], server_name
    )
    return _Channel(inner, _CallDetails(token, None))


async def check_health(
    target: str, timeout: float = 2.0, service: str = "", tls: GrpcTls | None = None
) -> str:
    """Return the gRPC health status name of `target` (or UNREACHABLE: <reason>)."""
    async with _open_channel(target, tls) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"UNREACHABLE: {exc.code().name}"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
