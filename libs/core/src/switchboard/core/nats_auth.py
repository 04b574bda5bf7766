"""Who may do what on NATS: one table of each service's subjects, streams, consumers and stores,
from which each NATS user's publish/subscribe permissions and the nats-server configuration of
the embedded default are derived (docs/nats-security.md).

A service publishes only its own events: a channel only ``contact.<tenant>.<its channel>.>``, so
the fax service cannot forge a chat contact, and with the deployment's tenants known, none can
publish for a tenant it does not serve. Its JetStream API is limited to the shared streams it
declares, its own durable consumers, its own streams, key-value buckets and object stores (full
use), the object stores it reads attachments from (read only), and those it deletes an erased
customer's objects from. Replies arrive on
``_INBOX.>``, acknowledgements go to ``$JS.ACK.<stream>.<its durable>.>``.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchboard.core import deadletter, events, revocation, router_groups, stream_erasure
from switchboard.v1 import events_pb2

# The operator's user (`switchboard status`, `switchboard dlq`): every subject.
OPERATOR = "admin"
# Subjects every service reads from JetStream's replies and pull deliveries.
INBOX = "_INBOX.>"
# The environment variable that gives nats-server the JetStream encryption key (the key is never
# written into its configuration; see new_jetstream_key).
KEY_ENV = "NATS_JETSTREAM_KEY"
_KEY_PLACEHOLDER = "<jetstream key from the environment>"
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class Grant:
    """What one service does on NATS. Subjects may hold ``{tenant}``, expanded per tenant."""

    publishes: tuple[str, ...] = ()  # event and command subjects it publishes
    consumers: tuple[tuple[str, str], ...] = ()  # (stream, durable) it consumes
    streams: tuple[tuple[str, str], ...] = ()  # (stream, subjects) of its own
    buckets: tuple[str, ...] = ()  # key-value buckets of its own
    objects: tuple[str, ...] = ()  # object stores of its own
    reads_objects: tuple[str, ...] = ()  # other services' object stores it reads
    reads_buckets: tuple[str, ...] = ()  # other services' key-value buckets it reads
    # Other services' object stores it deletes objects from (a customer's erasure).
    erases_objects: tuple[str, ...] = ()
    core: tuple[str, ...] = ()  # plain NATS subjects it publishes and subscribes to
    # May change the shared streams' configuration (every service may create them, which
    # changes nothing that exists); one service is enough to bring them up to date.
    updates_streams: bool = False
    # Streams it erases contacts from (switchboard.core.stream_erasure: the shared ones, the
    # chat's history and conversations): it reads their messages one at a time and securely
    # deletes single ones; never purges.
    erases: tuple[str, ...] = ()


def _channel(name: str) -> str:
    return f"contact.{{tenant}}.{name}.>"


_EMAIL_OUT = events.spec_for(events_pb2.OutboundEmail).template
_FAX_OUT = events.spec_for(events_pb2.OutboundFax).template
# The inbox plays call recordings and announces each playback for the case's audit trail.
_RECORDING_PLAYED = "contact.{tenant}.voice.recording_played"


def router_grant(groups: Iterable[str] = (router_groups.DEFAULT_GROUP,)) -> Grant:
    """The routers' grant, for every router group (ROUTER_GROUPS): each group's durable consumer
    and journal; the snapshots and leases are shared buckets keyed by group."""
    return Grant(
        # Its decisions, and the ends, holds and transfers of any channel's contacts.
        publishes=(
            "routing.{tenant}.>",
            "contact.{tenant}.*.ended",
            "contact.{tenant}.*.held",
            "contact.{tenant}.*.transferred",
        ),
        consumers=tuple(("EVENTS", router_groups.durable(g)) for g in groups),
        streams=tuple(router_groups.journal_stream(g) for g in groups),
        buckets=("ROUTER", "ROUTER_LEASES"),
        objects=("ROUTER_SNAPSHOTS",),
    )


# The table. Names are the services' NATS users (and their `switchboard run` names); durables,
# buckets and subjects are the services' defaults (renaming one in its settings needs the same
# rename here).
# The most voice gateways one deployment runs: their durables are voice-gateway-0 to -15.
VOICE_GATEWAY_REPLICAS = 16

SERVICES: dict[str, Grant] = {
    "case": Grant(
        publishes=("case.{tenant}.>", _EMAIL_OUT),  # case events; the CSAT survey mail
        consumers=(("EVENTS", "case"), ("EVENTS", "case-csat")),
        # An erased customer's raw mails, fax documents, chat uploads and call recordings
        # (docs/security.md).
        erases_objects=("email", "fax-documents", "chat_files", "recordings"),
        updates_streams=True,  # the system of record keeps the events' streams up to date
        erases=stream_erasure.ERASED_STREAMS,  # erasing a customer reaches the bus
        buckets=("admin_case_policy",),  # the tenants' policies changed at run time
    ),
    "router": router_grant(),
    "chat": Grant(
        # Its chats; the inbox's replies; the recordings its users play; the revocations of
        # its tenants' users' tokens (an agent disabled in the admin console).
        publishes=(
            _channel("chat"),
            _EMAIL_OUT,
            _FAX_OUT,
            _RECORDING_PLAYED,
            f"$KV.{revocation.BUCKET}.{{tenant}}.>",
        ),
        consumers=(("EVENTS", "chat"),),
        # The admin console's audit trail and its agents directory (docs/admin.md).
        streams=(("CHAT_HISTORY", "chat.history.>"), ("ADMIN_AUDIT", "admin.audit.>")),
        buckets=("chat_conversations", "chat_portal_links", "admin_agents"),
        objects=("chat_files",),
        reads_objects=("email", "fax-documents", "fax-quarantine"),
        # The case service's policy changes, each with its audit record (docs/admin.md).
        reads_buckets=("admin_case_policy",),
        core=("switchboard.chat.>",),  # its plain subjects: Socket.IO across replicas
    ),
    "voice-gateway": Grant(
        publishes=(_channel("voice"),),
        # Every gateway follows the events itself (a call lives on one): a durable per replica,
        # named by its index (SWITCHBOARD_REPLICA_ID, a StatefulSet's pod index).
        consumers=(
            ("EVENTS", "voice-gateway"),
            *(("EVENTS", f"voice-gateway-{i}") for i in range(VOICE_GATEWAY_REPLICAS)),
        ),
        objects=("recordings",),  # the calls' recordings, sealed (docs/voice.md)
        # Its plain subjects: which replica holds an agent's call (a supervisor dialled in).
        core=("switchboard.voice.>",),
    ),
    "email-ingest": Grant(
        publishes=(_channel("email"), _EMAIL_OUT),  # mail, and its acknowledgement mails
        consumers=(
            ("OUTBOUND", "email-outbound"),
            ("EVENTS", "email-outbound-ack"),
            ("EVENTS", "email-outbound-quarantine"),  # erased customers' quarantined mail
        ),
        buckets=(
            "email_checkpoints",
            "email_threads",
            "email_seen",
            "email_sent",
            "email_leases",
            "email_quarantine_index",
        ),
        objects=("email",),
        reads_objects=("chat_files", "fax-documents"),
        # An erased sender's or expired quarantined mail's EmailQuarantined (stream_erasure).
        erases=("EVENTS", "DEADLETTER"),
    ),
    "fax": Grant(
        publishes=(_channel("fax"),),
        consumers=(
            ("EVENTS", "fax"),
            ("OUTBOUND", "fax-outbound"),
            ("EVENTS", "fax-email"),
            ("EVENTS", "fax-quarantine"),  # erased customers' quarantined faxes
        ),
        buckets=("fax-jobs", "fax_quarantine_index"),
        objects=("fax-documents", "fax-quarantine"),
        reads_objects=("email", "chat_files"),
        # An erased sender's or expired quarantined fax's FaxReceived and FaxQuarantined.
        erases=("EVENTS", "DEADLETTER"),
    ),
}


def _api(*parts: str) -> str:
    return ".".join(("$JS.API", *parts))


def _stream_reads(stream: str) -> list[str]:
    """Read a stream's messages: info, get, direct get, ephemeral (ordered) consumers."""
    return [
        _api("STREAM.INFO", stream),
        _api("STREAM.MSG.GET", stream),
        _api("DIRECT.GET", stream),
        _api("DIRECT.GET", stream, ">"),
        _api("CONSUMER.CREATE", stream),
        _api("CONSUMER.CREATE", stream, ">"),
        _api("CONSUMER.INFO", stream, ">"),
        _api("CONSUMER.DELETE", stream, ">"),
        _api("CONSUMER.MSG.NEXT", stream, ">"),
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _stream_owned(stream: str) -> list[str]:
    """Everything on a stream of its own: declare it, read it, purge and delete in it."""
    return [
        *_stream_reads(stream),
        _api("STREAM.CREATE", stream),
        _api("STREAM.UPDATE", stream),
        _api("STREAM.PURGE", stream),
        _api("STREAM.MSG.DELETE", stream),
    ]


def _stream_erased(stream: str) -> list[str]:
    """Find and delete single messages of a stream: info, message get (next by subject) and
    delete. No consumer (creating an ephemeral one on a shared stream could rewrite another
    service's durable), no purge, no write."""
    return [
        _api("STREAM.INFO", stream),
        _api("STREAM.MSG.GET", stream),
        _api("STREAM.MSG.DELETE", stream),
    ]


def _expand(subjects: Iterable[str], tenants: Iterable[str] | None) -> list[str]:
    names = sorted(set(tenants)) if tenants else ["*"]
    out: list[str] = []
    for subject in subjects:
        for name in names if "{tenant}" in subject else [""]:
            expanded = subject.replace("{tenant}", name)
            if expanded not in out:
                out.append(expanded)
    return out


def permissions(grant: Grant, tenants: Iterable[str] | None = None) -> dict[str, Any]:
    """The nats-server ``permissions`` block of a user with `grant` (`tenants`: the deployment's
    tenants, or None for any)."""
    publish = ["$JS.API.INFO", _api("STREAM.NAMES")]
    shared = (
        "STREAM.INFO",
        "STREAM.CREATE",
        *(("STREAM.UPDATE",) if grant.updates_streams else ()),
    )
    for stream in events.STREAMS:  # every Bus declares the shared streams
        publish += [_api(op, stream) for op in shared]
    # Every service follows the revocation list: it reads it (and may create it if missing,
    # which changes nothing that exists); only the operator writes it.
    revocations = f"KV_{revocation.BUCKET}"
    publish += [*_stream_reads(revocations), _api("STREAM.CREATE", revocations)]
    publish += _expand(grant.publishes, tenants)
    for stream, durable in grant.consumers:
        publish += [
            _api("CONSUMER.CREATE", stream, durable),
            _api("CONSUMER.CREATE", stream, durable, ">"),
            _api("CONSUMER.INFO", stream, durable),
            _api("CONSUMER.MSG.NEXT", stream, durable),
            f"$JS.ACK.{stream}.{durable}.>",
            deadletter.parked_subject(durable, ">"),
        ]
    for stream in grant.erases:
        publish += _stream_erased(stream)
    for stream, subjects in grant.streams:
        publish += [*_stream_owned(stream), subjects]
    for bucket in grant.buckets:
        publish += [*_stream_owned(f"KV_{bucket}"), f"$KV.{bucket}.>"]
    for bucket in grant.objects:
        publish += [*_stream_owned(f"OBJ_{bucket}"), f"$O.{bucket}.>"]
    for bucket in grant.reads_objects:
        publish += _stream_reads(f"OBJ_{bucket}")
    for bucket in grant.reads_buckets:
        publish += _stream_reads(f"KV_{bucket}")
    for bucket in grant.erases_objects:
        # Read an object's metadata, write its deletion marker, purge its chunks.
        stream = f"OBJ_{bucket}"
        publish += [*_stream_reads(stream), _api("STREAM.PURGE", stream), f"$O.{bucket}.M.>"]
    publish += grant.core
    return {
        "publish": {"allow": _unique(publish)},
        "subscribe": {"allow": _unique([INBOX, *grant.core])},
    }


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def new_password() -> str:
    return secrets.token_urlsafe(32)


def new_jetstream_key() -> str:
    """A JetStream encryption key. nats-server parses an environment variable's value as a
    configuration value, so it starts with a letter and holds only letters and digits."""
    return "sb" + secrets.token_hex(32)


def credentials(path: Path, users: Iterable[str] = (OPERATOR, *SERVICES)) -> dict[str, str]:
    """Each user's password, kept in `path` (JSON, mode 0600): read, with a new password made
    for a user that has none yet."""
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {user: known.get(user) or new_password() for user in users}
    if wanted != known:
        write_secret(path, json.dumps(wanted, indent=2) + "\n")
    return wanted


def server_config(
    passwords: Mapping[str, str],
    *,
    key_env: str | None = KEY_ENV,
    tenants: Iterable[str] | None = None,
    tls: Mapping[str, Any] | None = None,
    router_group_names: Iterable[str] | None = None,
) -> str:
    """A nats-server configuration: every user of `passwords` with the permissions of its
    service (the operator with none withheld; the routers' for each of `router_group_names`, by
    default the one group `default`) and no anonymous access; JetStream (the store
    directory is the server's `-sd`) encrypted with the key in the server's environment variable
    `key_env` (None: not encrypted); TLS required with `tls` (cert_file, key_file, ca_file)."""
    jetstream: dict[str, Any] = {}
    if key_env:
        if not _ENV_NAME.match(key_env):
            raise ValueError(f"{key_env!r} is not an environment variable name")
        jetstream.update(cipher="chachapoly", key=_KEY_PLACEHOLDER)
    config: dict[str, Any] = {
        "jetstream": jetstream,
        "authorization": {"users": _users(passwords, tenants, router_group_names)},
    }
    if tls:
        config["tls"] = dict(tls)
    # nats-server reads JSON. Quoted strings are never variables (so `$JS.API...` stays a
    # subject); the key is the one unquoted variable, read from the environment at start.
    text = json.dumps(config, indent=2) + "\n"
    return text.replace(json.dumps(_KEY_PLACEHOLDER), f"${key_env}")


def authorization_config(
    passwords: Mapping[str, str],
    tenants: Iterable[str] | None = None,
    router_group_names: Iterable[str] | None = None,
) -> str:
    """The ``authorization`` block of server_config alone (the users and their permissions), for
    a configuration that sets JetStream, TLS and the cluster itself and includes this file
    (``include auth.conf``: deploy/k8s/base/nats.yaml)."""
    users = {"users": _users(passwords, tenants, router_group_names)}
    return "authorization: " + json.dumps(users, indent=2) + "\n"


def _users(
    passwords: Mapping[str, str],
    tenants: Iterable[str] | None,
    router_group_names: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Each user with its service's permissions (the routers' for each of `router_group_names`,
    by default the one group `default`)."""
    tenant_list = list(tenants) if tenants else None
    grants = dict(SERVICES)
    if router_group_names is not None:
        grants["router"] = router_grant(router_group_names)
    users = []
    for user, password in passwords.items():
        entry: dict[str, Any] = {"user": user, "password": password}
        if user != OPERATOR:
            entry["permissions"] = permissions(grants[user], tenant_list)
        users.append(entry)
    return users


def write_secret(path: Path, text: str) -> Path:
    """Write `text` (passwords, a configuration holding them) readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
    return path


def client_options(
    user: str = "",
    password: str = "",
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
) -> dict[str, Any]:
    """nats.connect's options for a user and, when a CA or certificate is given, TLS."""
    options: dict[str, Any] = {}
    if user:
        options.update(user=user, password=password)
    if ca_file or cert_file:
        context = ssl.create_default_context(cafile=ca_file or None)
        if cert_file:
            context.load_cert_chain(cert_file, key_file or None)
        options["tls"] = context
    return options


def options_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """client_options from NATS_USER, NATS_PASSWORD and NATS_TLS_{CA,CERT,KEY}_FILE."""
    return client_options(
        env.get("NATS_USER", ""),
        env.get("NATS_PASSWORD", ""),
        env.get("NATS_TLS_CA_FILE", ""),
        env.get("NATS_TLS_CERT_FILE", ""),
        env.get("NATS_TLS_KEY_FILE", ""),
    )
