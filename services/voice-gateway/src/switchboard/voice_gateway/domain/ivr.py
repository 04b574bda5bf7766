"""The IVR and the wait in queue: a menu's answer to each key, what the menus decide, what a
waiting caller hears, and the key that turns a waiting call into a callback."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.voice_gateway.config import Menu, NumberPlan
from switchboard.voice_gateway.domain.state import State

ATTEMPTS = 2  # a menu plays once, and once more after an invalid key
# The post-call satisfaction survey: a key from 1 (very dissatisfied) to 5 (very satisfied).
SURVEY_MENU = Menu("survey", {str(n): str(n) for n in range(1, 6)})


@dataclass(frozen=True)
class Chosen:
    value: str  # the option's language (language menu) or skill (topic menu)


@dataclass(frozen=True)
class Invalid:
    again: bool  # the menu plays once more; False: the caller made no choice


class MenuRound:
    """One menu, key by key: a configured key is a choice; any other key is invalid and replays
    the menu until the attempts run out. A timeout is no choice (the caller has nothing to do
    with it but wait)."""

    def __init__(self, menu: Menu, attempts: int = ATTEMPTS) -> None:
        self.menu = menu
        self.attempts = attempts
        self.invalid = 0

    @property
    def type_ahead(self) -> bool:
        """Keys pressed before the prompt ends count, except after an invalid key."""
        return self.invalid == 0

    def pressed(self, digit: str) -> Chosen | Invalid:
        if digit in self.menu.options:
            return Chosen(self.menu.options[digit])
        self.invalid += 1
        return Invalid(again=self.invalid < self.attempts)


def language(plan: NumberPlan, choice: str | None) -> str:
    """The call's language: the caller's choice, else the number's default."""
    return choice or plan.language


def skills(choice: str | None) -> list[str]:
    """The skills the topic menu asks of an agent."""
    return [choice] if choice else []


def spoken(n: int) -> list[str]:
    """A number's prompts, digit by digit."""
    return [f"digit-{d}" for d in str(n)]


def announcement(position: int | None, estimated_wait: float, callback_key: str) -> list[str]:
    """What a waiting caller hears: please hold, their place and estimated wait in minutes when
    the router says (`position` None or 0: it cannot), and the callback offer when there is a
    callback key."""
    names = ["please-hold"]
    if position is not None and position > 0:
        names += ["position", *spoken(position)]
        names += ["wait-minutes", *spoken(max(1, round(estimated_wait / 60)))]
    if callback_key:
        names.append("callback-offer")
    return names


def next_announcement(first: bool, position_poll: float, announce_every: float) -> float:
    """Seconds until the next announcement: the first soon after queueing, then periodically."""
    return position_poll if first else announce_every


def wants_callback(digit: str, callback_key: str, state: State) -> bool:
    """The caller pressed the callback key while waiting in queue (keys pressed while ringing
    or connected do not count)."""
    return bool(callback_key) and digit == callback_key and state is State.QUEUED
