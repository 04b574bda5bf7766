"""Answers to the satisfaction survey sent after a case is resolved: reading the 1..5 rating a
customer writes, and telling a bare answer ("5") from a reply with more to say.

A bare answer is recorded as the case's rating and offered to no agent; a reply that carries more
text reaches an agent like any other message (and is recorded as a rating too when it starts with
one). The channel that receives the reply decides which it is, with `bare_rating`, and marks the
contact (`Contact.survey_answer`); the router and the case service honour the mark.
"""

from __future__ import annotations

import re
import unicodedata

# The survey's own token in its subject: a reply that keeps the subject answers the survey, also
# when its In-Reply-To and References were lost on the way.
SURVEY_TOKEN = "[CSAT]"

_STARS = frozenset("★⭐🌟")
_EMPTY_STARS = frozenset("☆")
_CJK_DIGITS = {"一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5}
# After NFKC (full-width digits and slashes are ASCII): a digit 1..5 that is the whole number
# (not 45, 4.5, 4,5 or 10), optionally "/5" or "out of 5", optionally a unit (점, 分, 点, stars),
# then the end of the line or a separator before the customer's words ("5 - great", "4, thanks").
_SEPARATOR = r"(?=$|[\s\-–—:;,.!?~)(。，！、])"
_DIGIT_RATING = re.compile(
    r"^(?P<n>[1-5])(?![\d.,]\d)(?!\d)"
    r"(?:\s*(?:/|out\s+of|of)\s*5(?!\d))?"
    r"\s*(?:점|分|点|點|星|颗星|顆星|stars?|points?|pts?)?" + _SEPARATOR,
    re.IGNORECASE,
)
_CJK_RATING = re.compile(r"^(?P<n>[一二两兩三四五])\s*(?:分|点|點|星|颗星|顆星)?" + _SEPARATOR)
# The scale named before the score: "5점 만점에", "满分5分", "滿分5分".
_SCALE = re.compile(r"^(?:5\s*점\s*만점|[满滿]分\s*5\s*分|5\s*分\s*[满滿]分)")
# What may follow a bare rating on its line: spacing and closing punctuation, nothing with meaning.
_TRAILER = re.compile(r"^[\s.!。！~]*$")
# A signature's delimiter ("-- "), under which nothing is the customer's answer.
_SIGNATURE = re.compile(r"^--\s*$")


def top_line(text: str) -> str:
    """The first line the customer wrote: blank and quoted (">") lines skipped."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(">"):
            return stripped
    return ""


def _rating(line: str) -> tuple[int, str] | None:
    """The rating a line starts with, and the rest of the line after it."""
    compact = "".join(line.split())
    if compact and set(compact) <= _STARS | _EMPTY_STARS:
        stars = sum(1 for ch in compact if ch in _STARS)
        return (stars, "") if 1 <= stars <= 5 else None
    scale = _SCALE.search(line)
    if scale:  # "5점 만점에 4점", "满分5分，我给4分": the score follows the scale
        return _rating(line[scale.end() :].lstrip(" ,，:：에给給我打"))
    match = _DIGIT_RATING.match(line) or _CJK_RATING.match(line)
    if match is None:
        return None
    n = match["n"]
    return (int(n) if n.isdigit() else _CJK_DIGITS[n]), line[match.end() :]


def _normalised(line: str) -> str:
    return unicodedata.normalize("NFKC", line).replace("\ufe0f", "")


def parse_rating(text: str) -> int | None:
    """The 1..5 rating on the top line of a survey reply, or None when it holds none: "4", "4/5",
    "4 out of 5", "★★★★", "5 - great", full-width "４", "4점", "4分", "四分"."""
    line = _normalised(top_line(text))
    found = _rating(line) if line else None
    return found[0] if found else None


def bare_rating(text: str) -> int | None:
    """The rating when the customer wrote nothing but it ("5", "４", "4점", "★★★★", "5/5."), with
    any quoted text (">" lines) and signature ("-- ") under it; None when they wrote more."""
    words: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if _SIGNATURE.match(stripped):
            break
        if stripped and not stripped.startswith(">"):
            words.append(stripped)
            if len(words) > 1:
                return None  # more than a rating (read no further into a long mail)
    if len(words) != 1:
        return None
    found = _rating(_normalised(words[0]))
    if found is None or not _TRAILER.match(found[1]):
        return None
    return found[0]
