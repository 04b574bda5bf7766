"""Call recordings as the voice gateway makes them: a stereo WAV (left the caller, right the
agent), sealed and stored by the gateway's own RecordingStore, which announces it to the case in
a MessageAdded."""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path

from switchboard.core import auth, events, stores
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2
from switchboard.voice_gateway.recording.policy import RecordingPolicy
from switchboard.voice_gateway.recording.recorder import RATE, wav_header
from switchboard.voice_gateway.recording.store import RecordingStore
from switchboard.voice_gateway.settings import VoiceGatewaySettings


def stereo_wav(seconds: float = 3.0) -> bytes:
    """The caller speaks (a 440 Hz tone, loud) in the first third, the agent (660 Hz, softer) in
    the last third; between them both are silent."""
    frames = int(seconds * RATE)
    third = frames // 3
    pcm = bytearray()
    for n in range(frames):
        left = int(20000 * math.sin(2 * math.pi * 440 * n / RATE)) if n < third else 0
        right = int(12000 * math.sin(2 * math.pi * 660 * n / RATE)) if n >= 2 * third else 0
        pcm += struct.pack("<hh", left, right)
    return wav_header(frames) + bytes(pcm)


def voice_contact(
    tenant: str, contact_id: str, phone: str = "+8225550123"
) -> events_pb2.ContactCreated:
    """A call waiting in the queue, as the voice gateway announces it."""
    contact = contact_pb2.Contact(
        contact_id=contact_id,
        tenant=tenant,
        channel=contact_pb2.CHANNEL_VOICE,
        language="ko",
        customer_name="최민수",
        identities=[
            contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_PHONE, value=phone)
        ],
    )
    contact.created_at.GetCurrentTime()
    return events_pb2.ContactCreated(
        meta=events.new_meta(tenant, contact_pb2.CHANNEL_VOICE, "voice-gateway"), contact=contact
    )


async def store_recording(bus: Bus, secret: str, tenant: str, contact_id: str, wav: bytes) -> None:
    """Seal and store `wav` as the call's recording with the gateway's store and master key (the
    one it derives from the platform's auth secret), which publishes the MessageAdded."""
    key = VoiceGatewaySettings(SWITCHBOARD_AUTH_SECRET=secret).recording_master_key()  # type: ignore[call-arg]
    store = RecordingStore(stores.ObjectStores(bus.js), bus, RecordingPolicy(), key)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "call.wav"
        path.write_bytes(wav)
        await store.store(tenant, contact_id, path, (len(wav) - 44) / 4 / RATE)


async def recorded_in_case(case_port: int, secret: str, contact_id: str) -> None:
    """Wait until the case service has the gateway's MessageAdded naming the recording (it runs
    a little behind)."""
    token = auth.mint(secret, "demo", "test-supervisor", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)

        async def recorded() -> bool:
            listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
            if not listed.cases:
                return False
            case = await stub.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id))
            wanted = f"{contact_id}:recording"
            return any(m.message_id == wanted for k in case.contacts for m in k.messages)

        await eventually(recorded, "the recording in the case")
