"""The router's notifier: one method per event, and every effect the platform must hear of has
one (a new effect type that is forgotten here fails this test, not production)."""

from __future__ import annotations

import typing

from switchboard.router import notifier
from switchboard.router.domain import engine as eng


def test_every_effect_is_published() -> None:
    # A withdrawn offer too: the channel presenting it stops (a ringing phone), and the case
    # record shows the contact waiting again.
    assert set(notifier._PUBLISHERS) == set(typing.get_args(eng.Effect))
