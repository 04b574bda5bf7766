"""VoiceService: supervisors listen to, whisper to and barge into their tenant's live calls."""

from __future__ import annotations

import grpc

from switchboard.core.errors import InvalidArgument
from switchboard.core.grpc import principal, require
from switchboard.v1 import events_pb2, voice_pb2, voice_pb2_grpc
from switchboard.voice_gateway.domain.supervision import Mode
from switchboard.voice_gateway.handlers.supervision import Supervision

_MODES = {
    events_pb2.SUPERVISION_MODE_UNSPECIFIED: Mode.MONITOR,
    events_pb2.SUPERVISION_MODE_MONITOR: Mode.MONITOR,
    events_pb2.SUPERVISION_MODE_WHISPER: Mode.WHISPER,
    events_pb2.SUPERVISION_MODE_BARGE: Mode.BARGE,
}
_WIRE = {
    Mode.MONITOR: events_pb2.SUPERVISION_MODE_MONITOR,
    Mode.WHISPER: events_pb2.SUPERVISION_MODE_WHISPER,
    Mode.BARGE: events_pb2.SUPERVISION_MODE_BARGE,
}


def _mode(value: int) -> Mode:
    mode = _MODES.get(value)  # type: ignore[call-overload]
    if mode is None:
        raise InvalidArgument("mode")
    return mode  # type: ignore[no-any-return]


class VoiceServicer(voice_pb2_grpc.VoiceServiceServicer):
    def __init__(self, supervision: Supervision) -> None:
        self.supervision = supervision

    async def Supervise(
        self, request: voice_pb2.SuperviseRequest, context: grpc.aio.ServicerContext
    ) -> voice_pb2.SuperviseResponse:
        # The supervisor's own phone is rung: the caller's tenant and subject name it.
        p = principal()
        require(request, "contact_id")
        mode = _mode(request.mode)
        sid = await self.supervision.start(p.tenant, p.subject, request.contact_id, mode)
        return voice_pb2.SuperviseResponse(supervision_id=sid, mode=_WIRE[mode])

    async def SetSupervisionMode(
        self, request: voice_pb2.SetSupervisionModeRequest, context: grpc.aio.ServicerContext
    ) -> voice_pb2.SetSupervisionModeResponse:
        require(request, "supervision_id", "mode")
        mode = await self.supervision.set_mode(
            principal().tenant, request.supervision_id, _mode(request.mode)
        )
        return voice_pb2.SetSupervisionModeResponse(mode=_WIRE[mode])

    async def EndSupervision(
        self, request: voice_pb2.EndSupervisionRequest, context: grpc.aio.ServicerContext
    ) -> voice_pb2.EndSupervisionResponse:
        require(request, "supervision_id")
        await self.supervision.end(principal().tenant, request.supervision_id)
        return voice_pb2.EndSupervisionResponse()


def registration(servicer: VoiceServicer) -> tuple[object, VoiceServicer, str]:
    return (
        voice_pb2_grpc.add_VoiceServiceServicer_to_server,
        servicer,
        voice_pb2.DESCRIPTOR.services_by_name["VoiceService"].full_name,
    )
