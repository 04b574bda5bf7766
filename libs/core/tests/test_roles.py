"""The role table against the proto descriptors, the interceptor and docs/security.md.

Every RPC of every switchboard.v1 service must have a rule (a new RPC without one fails here),
and for every rule a real gRPC server with core's interceptor admits exactly the roles and
partner scopes the rule lists, whatever the RPC's kind.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

import switchboard.v1
from switchboard.core import auth, roles
from switchboard.core import grpc as sb_grpc

SECRET = "roles-test-secret"
DOC = Path(__file__).resolve().parents[3] / "docs" / "security.md"


def services() -> list[ServiceDescriptor]:
    found = []
    for info in pkgutil.iter_modules(switchboard.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"switchboard.v1.{info.name}")
            found.extend(module.DESCRIPTOR.services_by_name.values())
    return found


def methods() -> dict[str, MethodDescriptor]:
    return {f"/{s.full_name}/{m.name}": m for s in services() for m in s.methods}


def test_every_rpc_has_a_rule_and_every_rule_an_rpc() -> None:
    rpcs = methods()
    assert len(rpcs) > 30  # the descriptors were found
    missing = sorted(set(rpcs) - set(roles.RULES))
    assert not missing, f"RPCs without a rule in switchboard.core.roles.RULES: {missing}"
    stale = sorted(name for name in roles.RULES if name.split(":")[0] not in rpcs)
    assert not stale, f"rules for RPCs that do not exist: {stale}"


def test_rules_name_only_known_roles_and_scopes() -> None:
    for name, rule in roles.RULES.items():
        assert rule.roles | rule.own <= set(roles.ROLES), name
        assert roles.PARTNER not in rule.roles | rule.own, f"{name}: partners need a scope"
        assert rule.scopes <= set(roles.SCOPES), name


def test_docs_show_the_table() -> None:
    text = DOC.read_text()
    assert roles.markdown() in text, (
        "docs/security.md does not show the current role table: paste the output of "
        "`uv run --locked python -m switchboard.core.roles` into it"
    )


# ---- the interceptor, for every rule ------------------------------------------------------


def _handler(m: MethodDescriptor) -> grpc.RpcMethodHandler:
    """A handler that answers an empty response whatever it is asked: only the interceptor's
    decision is under test."""
    request = message_factory.GetMessageClass(m.input_type)
    response = message_factory.GetMessageClass(m.output_type)
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }

    async def unary(req: Any, context: Any) -> Any:
        return response()

    async def server_stream(req: Any, context: Any) -> AsyncIterator[Any]:
        yield response()

    async def client_stream(requests: AsyncIterator[Any], context: Any) -> Any:
        async for _ in requests:
            pass
        return response()

    async def bidi(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for _ in requests:
            yield response()

    behaviours: dict[tuple[bool, bool], Callable[..., Any]] = {
        (False, False): unary,
        (False, True): server_stream,
        (True, False): client_stream,
        (True, True): bidi,
    }
    kind = (m.client_streaming, m.server_streaming)
    return kinds[kind](
        behaviours[kind],
        request_deserializer=request.FromString,
        response_serializer=response.SerializeToString,
    )


def _add_every_service(_: object, server: grpc.aio.Server) -> None:
    for service in services():
        handlers = {m.name: _handler(m) for m in service.methods}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),)
        )


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server, port, _ = await sb_grpc.start_server(
        [(_add_every_service, None, "switchboard.v1")], "127.0.0.1", 0, SECRET
    )
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def _call(target: str, token: str, name: str, m: MethodDescriptor) -> grpc.StatusCode:
    request = message_factory.GetMessageClass(m.input_type)()
    response = message_factory.GetMessageClass(m.output_type)
    io = {"request_serializer": type(request).SerializeToString,
          "response_deserializer": response.FromString}  # fmt: skip
    async with sb_grpc.channel(target, token) as ch:
        # A request stream is closed without a message: a refusal then comes at once (one the
        # client writes to first comes once that message is in, see below).
        try:
            if m.client_streaming and m.server_streaming:
                call = ch.stream_stream(name, **io)()
                await call.done_writing()
                async for _ in call:
                    pass
            elif m.server_streaming:
                async for _ in ch.unary_stream(name, **io)(request):
                    pass
            elif m.client_streaming:
                writer = ch.stream_unary(name, **io)()
                await writer.done_writing()
                await writer
            else:
                await ch.unary_unary(name, **io)(request)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def callers() -> list[tuple[str, list[str], list[str]]]:
    """(label, roles, scopes): every role alone, a partner with nothing, a partner per scope."""
    out = [(role, [role], []) for role in roles.ROLES]
    out += [(f"partner+{scope}", [roles.PARTNER], [scope]) for scope in roles.SCOPES]
    return out


@pytest.mark.parametrize("name", [n for n in roles.RULES if ":" not in n])
async def test_the_interceptor_admits_exactly_the_rule(target: str, name: str) -> None:
    m = methods()[name]
    rule = roles.RULES[name]
    wrong = []
    for label, held, scopes in callers():
        token = auth.mint(SECRET, "acme", "caller-1", held, scopes=scopes)
        listed = bool(set(held) & (rule.roles | rule.own)) or bool(set(scopes) & rule.scopes)
        expected = grpc.StatusCode.OK if listed else grpc.StatusCode.PERMISSION_DENIED
        got = await _call(target, token, name, m)
        if got != expected:
            wrong.append(f"{label}: {got.name}, expected {expected.name}")
    assert not wrong, f"{name}: {wrong}"


async def test_a_method_without_a_rule_is_refused(target: str) -> None:
    token = auth.mint(SECRET, "acme", "ops", list(roles.ROLES))
    async with sb_grpc.channel(target, token) as ch:
        call = ch.unary_unary("/switchboard.v1.CaseService/GetCase")
        assert await call(b"") == b""  # admitted: it has a rule
    server = grpc.aio.server(interceptors=[sb_grpc.ServerInterceptor(SECRET)])
    unruled = grpc.method_handlers_generic_handler(
        "switchboard.v1.Unruled",
        {"Do": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"")},
    )
    server.add_generic_rpc_handlers((unruled,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with sb_grpc.channel(f"127.0.0.1:{port}", token) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/switchboard.v1.Unruled/Do")(b"")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "no access rule" in (err.value.details() or "")
    finally:
        await server.stop(0)


# ---- a refused request stream ----------------------------------------------------------------

SESSION = "/switchboard.v1.RouterService/AgentSession"


def _session(ch: grpc.aio.Channel) -> Any:
    m = methods()[SESSION]
    return ch.stream_stream(
        SESSION,
        request_serializer=message_factory.GetMessageClass(m.input_type).SerializeToString,
        response_deserializer=message_factory.GetMessageClass(m.output_type).FromString,
    )()


def _open() -> Any:
    return message_factory.GetMessageClass(methods()[SESSION].input_type)()


async def test_a_refused_request_stream_is_ended_once_its_first_message_is_in(target: str) -> None:
    """A client opens a session by writing its first message and then reading. Were the refusal
    sent as the call starts, it would race that write: grpc.aio then reports the failed write
    (INTERNAL "Failed execute_batch", or the status raised from write) instead of the server's
    PERMISSION_DENIED, and a desk told INTERNAL retries where one told it may not stops."""
    token = auth.mint(SECRET, "acme", "partner-1", [roles.PARTNER])
    async with sb_grpc.channel(target, token) as ch:
        call = _session(ch)
        await call.wait_for_connection()
        await asyncio.sleep(0.5)
        assert not call.done()  # the refusal waits for what the client writes first
        await call.write(_open())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "AgentSession is not allowed to partner" in (err.value.details() or "")
        # Many in a row, each written then read: every one reads the server's own status.
        codes = []
        for _ in range(100):
            call = _session(ch)
            try:
                await call.write(_open())
                await call.read()
                codes.append("OK")
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code().name)
        assert set(codes) == {"PERMISSION_DENIED"}


async def test_a_refused_request_stream_that_sends_nothing_is_still_refused(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sb_grpc, "REFUSAL_FIRST_MESSAGE_WAIT", 0.2)
    token = auth.mint(SECRET, "acme", "partner-1", [roles.PARTNER])
    async with sb_grpc.channel(target, token) as ch:
        call = _session(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()  # nothing written, the request stream left open
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    forged = auth.mint("another-secret", "acme", "ko-1", ["agent"])
    async with sb_grpc.channel(target, forged) as ch:
        call = _session(ch)
        await call.write(_open())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
