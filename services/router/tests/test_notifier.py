"""The router's notifier: one method per event, and every effect the platform must hear of has
one (a new effect type that is forgotten here fails this test, not production)."""

from __future__ import annotations

import typing

from switchboard.router import notifier
from switchboard.router.domain import engine as eng


def test_every_effect_but_a_withdrawn_offer_is_published() -> None:
    # A withdrawn offer is the router's own bookkeeping: the offer's expiry or its re-offer is
    # what the platform hears.
    assert set(notifier._PUBLISHERS) == set(typing.get_args(eng.Effect)) - {eng.OfferWithdrawn}
