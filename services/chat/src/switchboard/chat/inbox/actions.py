"""The screens' JSON action APIs (``POST /api/<screen>/<action>``, see qa.py and kb.py): each
action is a ``_<action>`` coroutine run with the case-service stub of channels made for the
caller's token, and the helpers that read its arguments from the JSON body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from switchboard.chat.inbox.backends import Backends
from switchboard.core.errors import InvalidArgument, NotFound


def str_arg(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgument(key, "must be a string")
    return value


def int_arg(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(key, "must be a whole number")
    return value


class CaseActions:
    """The actions, each run with channels made for the caller's token (`backends`)."""

    # How an unknown action is named in its NotFound error.
    what = "action"

    def __init__(self, backends: Callable[[str, str], Backends]) -> None:
        self._backends = backends  # (token, tenant) -> channels

    async def __call__(
        self, token: str, tenant: str, action: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        handler: Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]] | None = getattr(
            self, f"_{action}", None
        )
        if handler is None or action.startswith("_"):
            raise NotFound(self.what, action)
        backends = self._backends(token, tenant)
        try:
            return await handler(backends.case, data)
        finally:
            await backends.close()
