"""The service-level formulas of docs/kpi.md, in one place: the router's live figures (the
wallboard) and the case service's reports both compute SL, SL2 and the abandonment rates here.

Of the real-time contacts that reached an outcome, with *T* the threshold and *S* the
short-abandon limit:

- SL  = answered within *T* ÷ (answered + abandoned): every abandon counts against;
- SL2 = answered within *T* ÷ (answered + abandoned − abandoned within *S*);
- abandon rate = abandoned ÷ (answered + abandoned), and its second form without the short
  abandons.

A rate whose denominator is 0 is undefined: None, never 0 % or 100 %.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Outcomes", "ratio"]


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator ÷ denominator, or None when the denominator is 0."""
    return numerator / denominator if denominator else None


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Counts of real-time contacts by outcome (contacts still waiting are in none of them)."""

    answered: int = 0
    answered_within_threshold: int = 0
    abandoned: int = 0
    short_abandoned: int = 0  # abandoned within the short-abandon limit S

    def __post_init__(self) -> None:
        if min(self.answered, self.answered_within_threshold, self.abandoned) < 0:
            raise ValueError("outcome counts are not negative")
        if self.answered_within_threshold > self.answered:
            raise ValueError("answered within the threshold cannot exceed answered")
        if not 0 <= self.short_abandoned <= self.abandoned:
            raise ValueError("short abandons are between 0 and the abandons")

    @property
    def service_level(self) -> float | None:
        """SL: answered within T ÷ (answered + abandoned)."""
        return ratio(self.answered_within_threshold, self.answered + self.abandoned)

    @property
    def service_level_2(self) -> float | None:
        """SL2: answered within T ÷ (answered + abandoned − short abandoned)."""
        return ratio(
            self.answered_within_threshold,
            self.answered + self.abandoned - self.short_abandoned,
        )

    @property
    def abandon_rate(self) -> float | None:
        """Abandoned ÷ (answered + abandoned)."""
        return ratio(self.abandoned, self.answered + self.abandoned)

    @property
    def abandon_rate_2(self) -> float | None:
        """(Abandoned − short abandoned) ÷ (answered + abandoned − short abandoned)."""
        return ratio(
            self.abandoned - self.short_abandoned,
            self.answered + self.abandoned - self.short_abandoned,
        )
