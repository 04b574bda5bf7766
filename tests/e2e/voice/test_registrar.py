"""The registrar gives nothing away and takes no replay: an unknown user is answered exactly as a
known user with a wrong password, and a digest cannot be used again, neither as it was nor with
another Contact (RFC 3261 section 22, RFC 7616 nonce counts)."""

from __future__ import annotations

from typing import Any

from .conftest import Voice, raw_phone


def _answer(msg: Any) -> tuple[int, str, bool, str]:
    """What a response tells an attacker: status, reason, whether it challenges, and how."""
    challenge = msg.get("WWW-Authenticate")
    # The nonce differs per challenge; everything else must not.
    shape = ",".join(p.strip() for p in challenge.split(",") if "nonce=" not in p)
    return msg.status, msg.reason, bool(challenge), shape


async def test_an_unknown_user_is_answered_as_a_known_user_with_a_wrong_password(
    voice: Voice,
) -> None:
    known = await raw_phone("agent-ko", "wrong-password")
    unknown = await raw_phone("nobody", "wrong-password")
    port = voice.sip_port
    answers: dict[str, list[tuple[int, str, bool, str]]] = {}
    for phone in (known, unknown):
        seen = answers.setdefault(phone.agent_id, [])
        challenge = await phone.send_register(port, 1)
        seen.append(_answer(challenge))
        # A digest over a genuine nonce, with the wrong password (or no such user).
        auth = phone.authorization(challenge, port)
        seen.append(_answer(await phone.send_register(port, 2, auth)))
        # A digest over a nonce the gateway never issued.
        forged = auth.replace('nonce="', 'nonce="1.forged', 1)
        seen.append(_answer(await phone.send_register(port, 3, forged)))
        # Another realm.
        other_realm = auth.replace('realm="switchboard"', 'realm="elsewhere"')
        seen.append(_answer(await phone.send_register(port, 4, other_realm)))
    assert answers["agent-ko"] == answers["nobody"]
    assert [a[0] for a in answers["nobody"]][:2] == [401, 403]


async def test_a_replayed_digest_is_refused_with_its_contact_or_another(voice: Voice) -> None:
    registrar = voice.gateway.gateway.registrar  # type: ignore[union-attr]
    port = voice.sip_port
    phone = await raw_phone("agent-ko", "pw-ko")
    auth = await phone.register(port)
    binding = registrar.lookup("demo", "agent-ko")
    assert binding is not None and binding.contact.endswith(f":{phone.port}")

    # An eavesdropper replays the REGISTER's Authorization with its own Contact: refused.
    thief = await raw_phone("agent-ko", "unknown-to-the-thief")
    replayed = await thief.send_register(port, 7, auth)
    assert replayed.status == 401 and "stale=true" in replayed.get("WWW-Authenticate")
    # ... and as it was, from the phone's own Contact (the nonce count did not increase).
    again = await phone.send_register(port, 8, auth)
    assert again.status == 401
    assert registrar.lookup("demo", "agent-ko") is binding
    assert binding.contact.endswith(f":{phone.port}")

    # The phone itself refreshes with the next nonce count, or answers a new challenge.
    challenge = await phone.send_register(port, 9)
    refreshed = await phone.send_register(port, 10, phone.authorization(challenge, port, nc=1))
    assert refreshed.status == 200
