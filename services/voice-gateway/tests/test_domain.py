"""Unit tests of the gateway's pure decisions (domain/) and the registrar's keepalive count:
no sockets, no nats-server, no baresip."""

from __future__ import annotations

import pytest

from switchboard.voice_gateway.config import Menu, NumberPlan, VoiceConfig
from switchboard.voice_gateway.domain import admission, dtmf, hold, ivr, ringing, transfer
from switchboard.voice_gateway.domain.numbers import e164
from switchboard.voice_gateway.domain.refused import Refused
from switchboard.voice_gateway.domain.state import State, is_live, is_over
from switchboard.voice_gateway.media import sdp
from switchboard.voice_gateway.sip.registrar import MAX_MISSED_PINGS, Binding, Registrar
from switchboard.voice_gateway.sip.transport import Peer

PLAN = NumberPlan(number="+8215880001", tenant="demo", queue="general", language="en")
LANGUAGES = Menu("language-menu", {"1": "ko", "2": "zh", "3": "en"})


def offer_sdp(*payloads: int, host: str = "10.0.0.5", direction: str = "sendrecv") -> bytes:
    return sdp.build(host, 4000, list(payloads), direction, session="1")


# ---- admission ----------------------------------------------------------------------------------


def test_capacity_refuses_a_loop_before_the_call_limit() -> None:
    assert admission.capacity(True, 10, 10, 30) == Refused(482, "Loop Detected")
    assert admission.capacity(False, 10, 10, 30) == Refused(
        503, "Service Unavailable: call limit reached", 30
    )
    assert admission.capacity(False, 9, 10, 30) is None


def test_offer_needs_a_configured_number_and_g711() -> None:
    assert admission.offer(None, offer_sdp(0)) == Refused(404, "Number Not Configured")
    assert admission.offer(PLAN, b"") == Refused(488, "Not Acceptable Here: offer PCMU or PCMA")
    assert admission.offer(PLAN, offer_sdp(8)) == admission.Admitted(
        PLAN, sdp.parse(offer_sdp(8)), 8
    )
    no_audio = admission.offer(PLAN, b"v=0\r\nc=IN IP4 10.0.0.5\r\n")
    assert no_audio == Refused(488, "Not Acceptable Here: No audio stream in SDP")
    g722 = sdp.build("10.0.0.5", 4000, 0, session="1").replace(b"RTP/AVP 0", b"RTP/AVP 9")
    assert admission.offer(PLAN, g722) == Refused(488, "Not Acceptable Here: offer PCMU or PCMA")


def test_first_g711_of_the_offer_is_answered() -> None:
    admitted = admission.offer(PLAN, offer_sdp(8, 0))
    assert isinstance(admitted, admission.Admitted) and admitted.payload_type == 8


def test_e164() -> None:
    assert e164("821012345678") == "+821012345678"
    assert e164("+821012345678") == "+821012345678"
    assert e164("anonymous") == "anonymous"
    assert e164("12") == "12"


# ---- IVR and queue ------------------------------------------------------------------------------


def test_menu_choice_with_type_ahead() -> None:
    menu = ivr.MenuRound(LANGUAGES)
    assert menu.type_ahead
    assert menu.pressed("2") == ivr.Chosen("zh")


def test_menu_invalid_key_replays_once_then_gives_up() -> None:
    menu = ivr.MenuRound(LANGUAGES)
    assert menu.pressed("9") == ivr.Invalid(again=True)
    assert not menu.type_ahead  # keys pressed during the error are dropped
    assert menu.pressed("3") == ivr.Chosen("en")
    menu = ivr.MenuRound(LANGUAGES)
    assert menu.pressed("#") == ivr.Invalid(again=True)
    assert menu.pressed("*") == ivr.Invalid(again=False)


def test_menu_outcomes_fall_back_to_the_plan() -> None:
    assert ivr.language(PLAN, "ko") == "ko"
    assert ivr.language(PLAN, None) == "en"
    assert ivr.skills("billing") == ["billing"]
    assert ivr.skills(None) == []


def test_announcement() -> None:
    assert ivr.announcement(None, 0.0, "*") == ["please-hold", "callback-offer:*"]
    assert ivr.announcement(0, 90.0, "") == ["please-hold"]
    assert ivr.announcement(12, 30.0, "#") == [
        "please-hold",
        "position",
        "n12",
        "position-end",
        "wait",
        "n1",  # never less than a minute
        "minute",
        "callback-offer:#",
    ]
    assert ivr.announcement(3, 610.0, "")[-3:] == ["wait", "n10", "minutes"]


def test_numbers_are_words_not_digits() -> None:
    assert ivr.number(0) == ["n0"]
    assert ivr.number(3) == ["n3"]
    assert ivr.number(19) == ["n19"]
    assert ivr.number(20) == ["n20"]
    assert ivr.number(21) == ["n20", "n1"]
    assert ivr.number(99) == ["n90", "n9"]
    assert ivr.number(105) == ["n1", "n0", "n5"]
    assert ivr.position(3) == ["position", "n3", "position-end"]


def test_announcements_start_soon_then_come_periodically() -> None:
    assert ivr.next_announcement(True, 5.0, 30.0) == 5.0
    assert ivr.next_announcement(False, 5.0, 30.0) == 30.0


def test_callback_key_counts_only_while_queued() -> None:
    assert ivr.wants_callback("*", "*", State.QUEUED)
    assert not ivr.wants_callback("*", "*", State.CONNECTED)
    assert not ivr.wants_callback("*", "*", State.RINGING)
    assert not ivr.wants_callback("1", "*", State.QUEUED)
    assert not ivr.wants_callback("", "", State.QUEUED)


def test_states() -> None:
    assert is_live(State.IVR) and is_live(State.ENDED) and not is_live(State.CALLBACK)
    assert is_over(State.ENDED) and is_over(State.CALLBACK) and not is_over(State.QUEUED)


# ---- DTMF in SIP INFO ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("Application/DTMF-Relay; charset=x", b"signal = #\r\n", "#"),
        ("application/dtmf", b"*\r\n", "*"),
        ("application/dtmf", b"", Refused(400, "Malformed DTMF Signal")),
        ("application/dtmf-relay", b"Signal=X\r\n", Refused(400, "Malformed DTMF Signal")),
        ("text/plain", b"5", Refused(415, "Unsupported Media Type")),
    ],
)
def test_info_digit(content_type: str, body: bytes, expected: str | Refused) -> None:
    assert dtmf.info_digit(content_type, body) == expected


# ---- ringing ------------------------------------------------------------------------------------


def test_only_a_waiting_call_rings() -> None:
    assert ringing.can_ring(State.QUEUED) and ringing.can_ring(State.CALLBACK)
    for state in (State.IVR, State.RINGING, State.CONNECTED, State.ENDED):
        assert not ringing.can_ring(state)


def test_ring_timeout_is_cut_by_the_offer_expiry() -> None:
    assert ringing.ring_timeout(15.0, 0, 1000.0) == 15.0
    assert ringing.ring_timeout(15.0, 1100.0, 1000.0) == 15.0
    assert ringing.ring_timeout(15.0, 1010.0, 1000.0) == 9.5
    assert ringing.ring_timeout(15.0, 1000.2, 1000.0) == ringing.MIN_RING


def test_ringing_states_and_decline_reasons() -> None:
    assert ringing.ringing(State.QUEUED) is State.RINGING
    assert ringing.ringing(State.CALLBACK) is State.CALLBACK
    assert ringing.unanswered(State.RINGING) is State.QUEUED
    assert ringing.unanswered(State.CALLBACK) is State.CALLBACK
    assert ringing.unanswered(State.ENDED) is State.ENDED
    assert ringing.decline_reason(408) == ringing.decline_reason(487) == "no answer"
    assert ringing.decline_reason(486) == "phone answered 486"


# ---- transfer and hold --------------------------------------------------------------------------


def test_only_the_agent_transfers_a_connected_call() -> None:
    assert transfer.refer_refusal(True, State.CONNECTED, "<sip:9@gw>") is None
    forbidden = Refused(403, "Forbidden: only the agent may transfer a connected call")
    assert transfer.refer_refusal(False, State.CONNECTED, "<sip:9@gw>") == forbidden
    assert transfer.refer_refusal(True, State.QUEUED, "<sip:9@gw>") == forbidden
    assert transfer.refer_refusal(True, State.CONNECTED, "") == forbidden


def test_transfer_target_queue() -> None:
    other = NumberPlan(number="+15550199", tenant="acme", queue="sales", language="en")
    support = NumberPlan(number="+15550100", tenant="demo", queue="support", language="en")
    config = VoiceConfig(
        realm="switchboard",
        phones={},
        numbers={"+15550199": other, "+15550100": support},
        transfer_codes={"9": "english"},
    )
    assert transfer.target_queue(config, "9", "demo") == "english"
    assert transfer.target_queue(config, "15550100", "demo") == "support"
    assert transfer.target_queue(config, "+15550199", "demo") == "+15550199"  # not our tenant's
    assert transfer.target_queue(config, "billing", "demo") == "billing"
    assert transfer.target_queue(config, "", "demo") == ""
    assert transfer.refused_status(True) == "404 Not Found"
    assert transfer.refused_status(False) == "503 Service Unavailable"


def test_reinvite_answer_direction() -> None:
    assert hold.answer_direction(None) == "sendrecv"
    assert hold.answer_direction(sdp.parse(offer_sdp(0))) == "sendrecv"
    assert hold.answer_direction(sdp.parse(offer_sdp(0, direction="sendonly"))) == "recvonly"
    assert hold.answer_direction(sdp.parse(offer_sdp(0, direction="inactive"))) == "inactive"
    assert hold.answer_direction(sdp.parse(offer_sdp(0, host="0.0.0.0"))) == "inactive"


# ---- keepalives ---------------------------------------------------------------------------------


def test_a_phone_missing_keepalives_in_a_row_is_unregistered() -> None:
    registrar = Registrar("switchboard", {("demo", "agent-ko"): "pw"})
    binding = Binding(
        "demo", "agent-ko", "sip:agent-ko@10.0.0.7", Peer("udp", "10.0.0.7", 5060), 1e12
    )
    registrar.bindings[("demo", "agent-ko")] = binding
    assert not registrar.ping_missed(binding)
    registrar.ping_answered(binding)  # an answer resets the count
    assert binding.missed_pings == 0
    for _ in range(MAX_MISSED_PINGS - 1):
        assert not registrar.ping_missed(binding)
    assert registrar.ping_missed(binding)
    assert registrar.lookup("demo", "agent-ko") is None


def test_a_fresh_registration_survives_the_old_bindings_misses() -> None:
    registrar = Registrar("switchboard", {("demo", "agent-ko"): "pw"})
    peer = Peer("udp", "10.0.0.7", 5060)
    old = Binding("demo", "agent-ko", "sip:agent-ko@10.0.0.7", peer, 1e12, missed_pings=1)
    fresh = Binding("demo", "agent-ko", "sip:agent-ko@10.0.0.7", peer, 1e12)
    registrar.bindings[("demo", "agent-ko")] = fresh
    assert not registrar.ping_missed(old)
    assert registrar.lookup("demo", "agent-ko") is fresh
