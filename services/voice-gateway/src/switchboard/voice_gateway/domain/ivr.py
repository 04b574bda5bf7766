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


def number(n: int) -> list[str]:
    """A number's prompt fragments: n0 to n19 and the tens n20 to n90 (twenty-one is n20 n1,
    이십일 n20 n1, 二十一 n20 n1, にじゅういち n20 n1); beyond 99, digit by digit."""
    if n < 0:
        raise ValueError(f"{n} is negative")
    if n < 20:
        return [f"n{n}"]
    if n < 100:
        tens, units = divmod(n, 10)
        return [f"n{tens * 10}"] + ([f"n{units}"] if units else [])
    return [f"n{d}" for d in str(n)]


def position(n: int) -> list[str]:
    """'You are number N in the queue.'"""
    return ["position", *number(n), "position-end"]


def wait_minutes(seconds: float) -> list[str]:
    """'The estimated wait is N minutes.', rounded to whole minutes, at least one."""
    minutes = max(1, round(seconds / 60))
    return ["wait", *number(minutes), "minute" if minutes == 1 else "minutes"]


def announcement(position_: int | None, estimated_wait: float, callback_key: str) -> list[str]:
    """What a waiting caller hears: please hold, their place and estimated wait in minutes when
    the router says (`position_` None or 0: it cannot), and the callback offer naming the
    callback key when there is one."""
    names = ["please-hold"]
    if position_ is not None and position_ > 0:
        names += position(position_) + wait_minutes(estimated_wait)
    if callback_key:
        names.append(f"callback-offer:{callback_key}")
    return names


def next_announcement(first: bool, position_poll: float, announce_every: float) -> float:
    """Seconds until the next announcement: the first soon after queueing, then periodically."""
    return position_poll if first else announce_every


def wants_callback(digit: str, callback_key: str, state: State) -> bool:
    """The caller pressed the callback key while waiting in queue (keys pressed while ringing
    or connected do not count)."""
    return bool(callback_key) and digit == callback_key and state is State.QUEUED
