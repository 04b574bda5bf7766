"""Personal data at rest: sealed in the case store's rows, found again by blind index, unreadable
once its customer is erased, readable across a master key rotation (docs/security.md)."""

from __future__ import annotations

import asyncio
import base64
import contextvars
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit, customers
from switchboard.case.adapters import backfill, crypto, database, keyring, orm
from switchboard.case.commands import CaseCommands
from switchboard.case.entrypoints.nats_consumer import handlers_by_type
from switchboard.case.handlers import CaseHandlers
from switchboard.case.knowledge.orm import KbArticle, KbArticleVersion
from switchboard.case.migrate import migrate
from switchboard.case.records import CaseRecords
from switchboard.case.reports.orm import CsatRating, QaEvaluation
from switchboard.case.settings import CaseSettings
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.sla.policy import parse
from switchboard.case.views import CaseViews
from switchboard.core import events
from switchboard.core.errors import RetryUntouched
from switchboard.core.settings import UnsafeSettings
from switchboard.v1 import contact_pb2, events_pb2

PHONE, PHONE_NORMALISED = "010-9876-5432", "+821098765432"
EMAIL = "jiwoo.park@example.com"
NAME = "Park Jiwoo"
TEXT = "my card number ends in 4417 and the refund never came"
REPLY = "we are sending the refund to account 3333-01-5550123"
NOTE = "customer lives at 12 Sejong-daero"
SECRETS = (PHONE_NORMALISED, "1098765432", EMAIL, NAME, TEXT, REPLY, NOTE, "refund never came")
MASTER_A, MASTER_B = b"A" * 32, b"B" * 32


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, as in a new process: no data key unwrapped yet."""
    monkeypatch.setattr(crypto, "_keys", {})
    monkeypatch.setattr(crypto, "_erased", set())


@pytest.fixture(autouse=True)
def fresh_key_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    new_process(monkeypatch)


@pytest.fixture
async def store(
    database_url: str,
) -> AsyncIterator[tuple[str, async_sessionmaker[AsyncSession]]]:
    await migrate(database_url)
    engine = database.create_engine(database_url)
    yield database_url, database.sessionmaker(engine, keyring.Keyring(keyring.MasterKeys(MASTER_A)))
    await engine.dispose()


def created(
    contact_id: str, channel: int, *identities: tuple[int, str]
) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", channel, "test"),
        contact=contact_pb2.Contact(
            contact_id=contact_id,
            tenant="acme",
            channel=channel,  # type: ignore[arg-type]
            identities=[contact_pb2.CustomerIdentity(kind=k, value=v) for k, v in identities],  # type: ignore[misc]
            customer_name=NAME,
            subject="the refund never came",
            content=[contact_pb2.ContentPart(content_type="text/plain", text=TEXT)],
        ),
    )


def reply(contact_id: str) -> events_pb2.MessageAdded:
    return events_pb2.MessageAdded(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_VOICE, "test"),
        message=contact_pb2.Message(
            message_id=f"{contact_id}-reply",
            contact_id=contact_id,
            author=contact_pb2.AUTHOR_AGENT,
            agent_id="agent-7",
            parts=[contact_pb2.ContentPart(content_type="text/plain", text=REPLY)],
        ),
    )


async def run_contacts(sessions: async_sessionmaker[AsyncSession]) -> CaseCommands:
    """A call and an email from one customer, through the consumer's batch path, and a note."""
    policies = parse({"default_phone_region": "KR"})
    records = CaseRecords(policies, SlaEngine(policies), orm.utc_now)
    handlers = CaseHandlers(sessions, "case", records=records)
    by_type = handlers_by_type(handlers)
    batch = [
        created("call-1", contact_pb2.CHANNEL_VOICE, (contact_pb2.IDENTITY_KIND_PHONE, PHONE)),
        reply("call-1"),
        created(
            "mail-1",
            contact_pb2.CHANNEL_EMAIL,
            (contact_pb2.IDENTITY_KIND_EMAIL, EMAIL),
            (contact_pb2.IDENTITY_KIND_PHONE, PHONE),
        ),
    ]
    async with handlers.batch(batch, isolate=False):
        for event in batch:
            await by_type[type(event)](event)
    commands = CaseCommands(sessions, records, orm.utc_now)
    await commands.add_note("acme", "agent-7", await case_of(sessions, "call-1"), NOTE)
    return commands


async def case_of(sessions: async_sessionmaker[AsyncSession], contact_id: str) -> str:
    async with sessions() as session:
        row = await session.get(orm.Contact, contact_id)
        assert row is not None
        return row.case_id


def stored_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


async def test_no_personal_data_in_the_sqlite_file(tmp_path: Path) -> None:
    sqlite_file = tmp_path / "case.db"
    url = f"sqlite+aiosqlite:///{sqlite_file}"
    await migrate(url)
    engine = database.create_engine(url)
    sessions = database.sessionmaker(engine, keyring.Keyring(keyring.MasterKeys(MASTER_A)))
    try:
        await run_contacts(sessions)
        # The call and the email are one customer: the phone number's blind index matched.
        call_case, mail_case = await case_of(sessions, "call-1"), await case_of(sessions, "mail-1")
        assert call_case == mail_case
        case = await CaseViews(sessions).get_case("acme", call_case)
        assert case.customer.display_name == NAME
        assert {i.value for i in case.customer.identities} == {PHONE_NORMALISED, EMAIL}
        texts = {m.parts[0].text for c in case.contacts for m in c.messages}
        assert texts == {TEXT, REPLY}
        assert [n.text for n in case.notes] == [NOTE]
    finally:
        await engine.dispose()
    raw = stored_bytes(sqlite_file)
    assert b"sb1e:" in raw  # sealed values are there
    for secret in SECRETS:
        assert secret.encode() not in raw, f"{secret!r} is stored in clear"


async def test_erasure_makes_the_customer_unreadable_and_the_chains_still_verify(
    store: tuple[str, async_sessionmaker[AsyncSession]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, sessions = store
    commands = await run_contacts(sessions)
    case_id = await case_of(sessions, "call-1")
    case = await CaseViews(sessions).get_case("acme", case_id)
    customer_id = case.customer.customer_id

    erased, destroyed = await commands.erase("acme", "admin-1", customer_id)
    assert (erased, destroyed) == (customer_id, 1)

    for process in ("this one", "another"):
        if process == "another":  # a replica, or the store restored from a backup
            new_process(monkeypatch)
            engine = database.create_engine(url)
            sessions = database.sessionmaker(engine, keyring.Keyring(keyring.MasterKeys(MASTER_A)))
        case = await CaseViews(sessions).get_case("acme", case_id)
        assert case.customer.display_name == crypto.ERASED
        assert list(case.customer.identities) == []  # their blind indexes are gone
        assert case.subject == crypto.ERASED
        assert {m.parts[0].text for c in case.contacts for m in c.messages} == {crypto.ERASED}
        assert [n.text for n in case.notes] == [crypto.ERASED]
        trail = await CaseViews(sessions).audit_trail("acme", case_id, "")
        assert trail.intact
        assert all(e.data_json == '"[erased]"' for e in trail.entries)
        async with sessions() as session:
            checked, breaks = await audit.verify(session)
            assert checked >= 2 and breaks == []
            customer_trail = await audit.trail(session, audit.CUSTOMER, customer_id)
            assert customer_trail[-1].action == "erased"
    await engine.dispose()

    # The same phone number calls again: a new customer, whose data reads.
    sessions = database.sessionmaker(
        database.create_engine(url), keyring.Keyring(keyring.MasterKeys(MASTER_A))
    )
    policies = parse({"default_phone_region": "KR"})
    handlers = CaseHandlers(
        sessions, "case", records=CaseRecords(policies, SlaEngine(policies), orm.utc_now)
    )
    await handlers.on_contact_created(
        created("call-2", contact_pb2.CHANNEL_VOICE, (contact_pb2.IDENTITY_KIND_PHONE, PHONE))
    )
    again = await CaseViews(sessions).get_case("acme", await case_of(sessions, "call-2"))
    assert again.customer.customer_id != customer_id
    assert again.customer.display_name == NAME


async def test_a_new_master_key_wraps_the_tenant_keys_again_and_data_stays_readable(
    store: tuple[str, async_sessionmaker[AsyncSession]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, sessions = store
    await run_contacts(sessions)
    case_id = await case_of(sessions, "call-1")

    # Rolled out with the new key as current and the old one as previous: it wraps again.
    new_process(monkeypatch)
    engine = database.create_engine(url)
    rotating = keyring.Keyring(keyring.MasterKeys(MASTER_B, [MASTER_A]))
    sessions = database.sessionmaker(engine, rotating)
    assert await rotating.rotate(sessions) == 1
    assert await rotating.rotate(sessions) == 0
    assert (await CaseViews(sessions).get_case("acme", case_id)).customer.display_name == NAME
    await engine.dispose()

    # Then the old key is gone from the configuration: everything still reads.
    new_process(monkeypatch)
    engine = database.create_engine(url)
    sessions = database.sessionmaker(engine, keyring.Keyring(keyring.MasterKeys(MASTER_B)))
    case = await CaseViews(sessions).get_case("acme", case_id)
    assert case.customer.display_name == NAME
    assert {m.parts[0].text for c in case.contacts for m in c.messages} == {TEXT, REPLY}
    await engine.dispose()

    # Without the master key the data keys are sealed too.
    new_process(monkeypatch)
    engine = database.create_engine(url)
    sessions = database.sessionmaker(engine, keyring.Keyring(keyring.MasterKeys(MASTER_A)))
    case = await CaseViews(sessions).get_case("acme", case_id)
    assert case.customer.display_name == crypto.ERASED
    await engine.dispose()


async def test_rows_written_before_encryption_are_sealed_at_start(
    store: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    _url, sessions = store
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO customers (id, tenant, display_name, created_at) "
                "VALUES ('old-1', 'acme', :name, CURRENT_TIMESTAMP)"
            ),
            {"name": NAME},
        )
        await session.execute(
            text(
                "INSERT INTO customer_identities (tenant, kind, value, customer_id) "
                "VALUES ('acme', :kind, :value, 'old-1')"
            ),
            {"kind": contact_pb2.IDENTITY_KIND_EMAIL, "value": EMAIL},
        )
    assert await backfill.seal_existing(sessions) == 2
    assert await backfill.seal_existing(sessions) == 0
    async with sessions() as session:
        stored = (
            await session.execute(text("SELECT display_name FROM customers WHERE id = 'old-1'"))
        ).scalar_one()
        assert crypto.is_sealed(stored)
        identity = (await session.scalars(select(orm.CustomerIdentity))).one()
        assert identity.sealed == EMAIL and identity.value != EMAIL
    # The old customer is found by its address.
    policies = parse({})
    handlers = CaseHandlers(
        sessions, "case", records=CaseRecords(policies, SlaEngine(policies), orm.utc_now)
    )
    await handlers.on_contact_created(
        created("mail-9", contact_pb2.CHANNEL_EMAIL, (contact_pb2.IDENTITY_KIND_EMAIL, EMAIL))
    )
    async with sessions() as session:
        row = await session.get(orm.Contact, "mail-9")
        assert row is not None and row.customer_id == "old-1"


async def test_an_erasure_rolled_back_destroys_no_key(
    store: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    _url, sessions = store
    await run_contacts(sessions)
    case_id = await case_of(sessions, "call-1")
    customer_id = (await CaseViews(sessions).get_case("acme", case_id)).customer.customer_id
    with pytest.raises(RuntimeError):
        async with sessions.begin() as session:  # type: ignore[attr-defined]
            await customers.erase(session, "acme", customer_id, "admin-1", orm.utc_now())
            raise RuntimeError("the transaction fails")
    assert (await CaseViews(sessions).get_case("acme", case_id)).customer.display_name == NAME


def test_production_refuses_to_start_without_a_master_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CASE_MASTER_KEY", "CASE_MASTER_KEY_FILE", "SWITCHBOARD_MODE"):
        monkeypatch.delenv(name, raising=False)
    unsafe = CaseSettings(SWITCHBOARD_AUTH_SECRET="a-secret")  # type: ignore[call-arg]
    with pytest.raises(UnsafeSettings, match="CASE_MASTER_KEY"):
        unsafe.refuse_unsafe_production()
    key_file = tmp_path / "master-key"
    key_file.write_text(base64.b64encode(MASTER_B).decode() + "\n")
    safe = CaseSettings(  # type: ignore[call-arg]
        SWITCHBOARD_AUTH_SECRET="a-secret", CASE_MASTER_KEY_FILE=str(key_file)
    )
    safe.refuse_unsafe_production()
    masters = keyring.master_keys_from(safe.master_key, safe.master_key_file, "")
    assert masters.current == MASTER_B and not masters.is_development


async def test_the_blind_index_is_the_tenants_own(
    store: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    _url, sessions = store
    async with sessions.begin() as session:  # type: ignore[attr-defined]
        keys = keyring.of(session)
        acme, globex = (keys.index(session, t, EMAIL) for t in ("acme", "globex"))
        assert acme == keys.index(session, "acme", EMAIL)  # equal values match
        assert acme != globex and EMAIL not in (acme, globex)
        assert acme != keys.index(session, "acme", "someone.else@example.com")


async def test_a_key_committed_after_a_newer_one_is_still_learnt(
    store: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    """PostgreSQL numbers keys as they are inserted, and transactions commit in any order: a
    replica that read key 2 before key 1 was committed looks for key 1 again."""
    url, sessions = store
    engine = database.create_engine(url)
    replica = keyring.Keyring(keyring.MasterKeys(MASTER_A))
    other = database.sessionmaker(engine, replica)
    async with sessions.begin() as session:  # type: ignore[attr-defined]
        keyring.of(session).key_id(session, "acme")  # seq 1: the tenant's key
    async with sessions.begin() as session:  # type: ignore[attr-defined]
        keys = keyring.of(session)
        first, second = keys.key_id(session, "acme", "c-1"), keys.key_id(session, "acme", "c-2")
    async with sessions.begin() as session:  # type: ignore[attr-defined]
        # As if c-1's key had been committed late: out of sight, then back.
        await session.execute(text("UPDATE data_keys SET seq = -seq WHERE id = :id"), {"id": first})
    async with other() as session:
        await session.execute(select(1))
    assert replica._owners.get(("acme", "c-2")) == second
    assert ("acme", "c-1") not in replica._owners
    async with sessions.begin() as session:  # type: ignore[attr-defined]
        await session.execute(text("UPDATE data_keys SET seq = -seq WHERE id = :id"), {"id": first})
    async with other() as session:
        await session.execute(select(1))
    assert replica._owners.get(("acme", "c-1")) == first
    await engine.dispose()


async def test_what_a_split_moves_is_erased_with_the_new_customer(
    store: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    """A split moves identities and cases to a new customer; they are sealed again with its key,
    so erasing the new customer reaches them and leaves the original customer readable."""
    _url, sessions = store
    commands = await run_contacts(sessions)
    case_id = await case_of(sessions, "call-1")
    original = (await CaseViews(sessions).get_case("acme", case_id)).customer.customer_id
    _, new_id = await commands.split(
        "acme",
        "admin-1",
        original,
        [contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_EMAIL, value=EMAIL)],
        [case_id],
        "Park J.",
    )
    assert new_id != original

    await commands.erase("acme", "admin-1", new_id)

    case = await CaseViews(sessions).get_case("acme", case_id)
    assert case.customer.customer_id == new_id
    assert case.subject == crypto.ERASED
    assert {c.subject for c in case.contacts} == {crypto.ERASED}
    assert {m.parts[0].text for c in case.contacts for m in c.messages} == {crypto.ERASED}
    assert [n.text for n in case.notes] == [crypto.ERASED]
    async with sessions() as session:
        kept = await session.get(orm.Customer, original)
        assert kept is not None and kept.display_name == NAME
        identities = await session.scalars(
            select(orm.CustomerIdentity).where(orm.CustomerIdentity.customer_id == original)
        )
        assert [i.sealed for i in identities] == [PHONE_NORMALISED]


async def test_the_ratings_evaluations_and_drafts_of_a_split_case_go_with_its_new_customer(
    store: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    """What else is sealed with the case's customer's key, because it may quote them: a rating's
    comment, a QA evaluation's free text, an article drafted from the case (until published, when
    it is the tenant's). A split seals them again with the new customer's key, so erasing the new
    customer reaches them, and a published version, the tenant's, stays readable."""
    _url, sessions = store
    commands = await run_contacts(sessions)
    case_id = await case_of(sessions, "call-1")
    original = (await CaseViews(sessions).get_case("acme", case_id)).customer.customer_id
    at = orm.utc_now()
    async with sessions.begin() as session:  # type: ignore[attr-defined]
        keys = keyring.of(session)

        def theirs(text: str) -> str:
            return keys.seal(session, "acme", original, text)

        session.add(
            CsatRating(
                tenant="acme", case_id=case_id, contact_id="call-1", event_id="rating-1",
                score=2, comment=theirs("Park was upset"), rated_at=at,
            )
        )  # fmt: skip
        session.add(
            QaEvaluation(
                tenant="acme", contact_id="call-1", agent_id="agent-7", form_id="default",
                evaluator="qa-1", score=50.0, fatal_errors=0, non_fatal_errors=1, answers={},
                comment=theirs("the customer said 010-1234-5678"), scored_at=at,
                dispute_reason=theirs("they asked twice"), decision_note=theirs("upheld"),
            )
        )  # fmt: skip
        article = KbArticle(tenant="acme", source_case_id=case_id, latest_version=2)
        session.add(article)
        await session.flush()
        session.add_all(
            [
                KbArticleVersion(
                    article_id=article.id, version=1, tenant="acme", state="published",
                    title=keys.seal(session, "acme", keyring.TENANT, "Refunds"),
                    body=keys.seal(session, "acme", keyring.TENANT, "How refunds work"),
                ),
                KbArticleVersion(
                    article_id=article.id, version=2, tenant="acme", state="draft",
                    title=theirs("Refunds for Park"), body=theirs("Park's order 77"),
                    review_comment=theirs("name removed?"),
                ),
            ]
        )  # fmt: skip
    _, new_id = await commands.split("acme", "admin-1", original, [], [case_id], "Park J.")

    await commands.erase("acme", "admin-1", new_id)

    async with sessions() as session:
        [rating] = await session.scalars(select(CsatRating))
        [evaluation] = await session.scalars(select(QaEvaluation))
        versions = list(await session.scalars(select(KbArticleVersion)))
    assert rating.comment == crypto.ERASED
    assert (evaluation.comment, evaluation.dispute_reason, evaluation.decision_note) == (
        crypto.ERASED,
    ) * 3
    assert sorted((v.version, v.title, v.body, v.review_comment) for v in versions) == [
        (1, "Refunds", "How refunds work", ""),
        (2, crypto.ERASED, crypto.ERASED, crypto.ERASED),
    ]


async def test_a_customer_recorded_by_another_replica_after_this_batch_began_keeps_one_key(
    store: tuple[str, async_sessionmaker[AsyncSession]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two case services on one store: one records a new customer (and its data key) just after
    the other began a batch, whose keyring looked at the keys at its begin. That batch reads the
    customer's contact, and seals the agent's reply with the key the customer has, not a second
    one (which the store refuses: one key per customer)."""
    url, sessions = store
    if not url.startswith("postgresql"):
        pytest.skip("SQLite's write transaction locks out every other writer from its BEGIN on")
    engine = database.create_engine(url)
    replica = keyring.Keyring(keyring.MasterKeys(MASTER_A))
    other = database.sessionmaker(engine, replica)
    async with other() as session:
        await session.execute(select(1))  # it knows the keys there are now: none

    first = CaseHandlers(sessions, "case")
    await first.on_contact_created(
        created("call-1", contact_pb2.CHANNEL_VOICE, (contact_pb2.IDENTITY_KIND_PHONE, PHONE))
    )
    # The batch's keyring looked at the keys before that commit.
    looks: list[bool] = []
    refresh = replica.refresh

    def late(connection: object) -> None:
        looks.append(True)
        if len(looks) > 1:
            refresh(connection)  # type: ignore[arg-type]

    monkeypatch.setattr(replica, "refresh", late)
    second = CaseHandlers(other, "case")
    batch = [reply("call-1")]
    async with second.batch(batch, isolate=False):
        await handlers_by_type(second)[events_pb2.MessageAdded](batch[0])

    async with sessions() as session:
        owners = list(
            await session.scalars(
                select(orm.DataKey.customer_id).where(orm.DataKey.tenant == "acme")
            )
        )
        messages = list(await session.scalars(select(orm.Message.text)))
    assert sorted(owners) == sorted(set(owners))  # one key each: the tenant's, the customer's
    assert len(owners) == 2
    assert REPLY in messages and TEXT in messages  # both readable with the customer's key
    await engine.dispose()


async def test_a_contact_recorded_by_another_replica_after_this_batch_read_its_contacts_waits(
    store: tuple[str, async_sessionmaker[AsyncSession]], database_url: str
) -> None:
    """The other case service records the contact (its customer, its key) after this batch found
    it absent: the agent's reply waits for its redelivery, and no second key is made."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: no other commit can come in between")
    url, sessions = store
    engine = database.create_engine(url)
    other = database.sessionmaker(engine, keyring.Keyring(keyring.MasterKeys(MASTER_A)))
    second = CaseHandlers(other, "case")
    batch = [reply("call-1")]
    async with second.batch(batch, isolate=False) as unit:
        # Between the batch's preload and its handler, the other service commits the contact
        # (in a context of its own: not inside this batch).
        other_service = CaseHandlers(sessions, "case")
        await asyncio.create_task(
            other_service.on_contact_created(
                created(
                    "call-1", contact_pb2.CHANNEL_VOICE, (contact_pb2.IDENTITY_KIND_PHONE, PHONE)
                )
            ),
            context=contextvars.Context(),
        )
        with pytest.raises(RetryUntouched):
            async with unit.each(batch[0]):
                await handlers_by_type(second)[events_pb2.MessageAdded](batch[0])

    async with sessions() as session:
        owners = list(await session.scalars(select(orm.DataKey.customer_id)))
        messages = list(await session.scalars(select(orm.Message.message_id)))
        claimed = list(await session.scalars(select(orm.ProcessedEvent.event_id)))
    assert len(owners) == 2  # the tenant's key and the customer's, once each
    assert messages == ["call-1:initial"]  # the reply waits for its redelivery
    assert batch[0].meta.event_id not in claimed
    await engine.dispose()
