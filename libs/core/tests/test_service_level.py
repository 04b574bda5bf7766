"""The one service-level formula (docs/kpi.md), as the router and the reports both use it."""

from __future__ import annotations

import pytest

from switchboard.core.service_level import Outcomes


def test_every_abandon_counts_against_sl_and_short_ones_not_against_sl2() -> None:
    o = Outcomes(answered=4, answered_within_threshold=3, abandoned=2, short_abandoned=1)
    assert o.service_level == pytest.approx(3 / 6)
    assert o.service_level_2 == pytest.approx(3 / 5)
    assert o.abandon_rate == pytest.approx(2 / 6)
    assert o.abandon_rate_2 == pytest.approx(1 / 5)


def test_no_outcome_is_undefined_not_zero_or_one() -> None:
    o = Outcomes()
    assert (o.service_level, o.service_level_2, o.abandon_rate, o.abandon_rate_2) == (None,) * 4
    only_short = Outcomes(abandoned=2, short_abandoned=2)
    assert only_short.service_level == 0.0 and only_short.service_level_2 is None


@pytest.mark.parametrize(
    "counts",
    [
        {"answered": -1},
        {"answered": 1, "answered_within_threshold": 2},
        {"abandoned": 1, "short_abandoned": 2},
        {"short_abandoned": -1},
    ],
)
def test_impossible_counts_are_refused(counts: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Outcomes(**counts)
