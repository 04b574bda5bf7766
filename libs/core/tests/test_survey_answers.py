"""Reading answers to the satisfaction survey: the rating a reply starts with, and whether the
reply is nothing but that rating (an answer) or has more to say (a request for an agent)."""

from __future__ import annotations

import pytest

from switchboard.core.survey_answers import bare_rating, parse_rating


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("4", 4),
        ("4/5", 4),
        ("4 / 5", 4),
        ("4 out of 5", 4),
        ("★★★★", 4),
        ("★★★★☆", 4),
        ("⭐⭐⭐⭐⭐", 5),
        ("5 - great", 5),
        ("5, thanks a lot!", 5),
        ("3.", 3),
        ("４", 4),
        ("４／５", 4),
        ("4점", 4),
        ("5점 감사합니다", 5),
        ("4分", 4),
        ("5点", 5),
        ("四分", 4),
        ("五星", 5),
        ("  \n\n2\n", 2),
        ("5점 만점에 4점", 4),
        ("满分5分，我给4分", 4),
        ("5점 만점", None),
        ("1 (very dissatisfied)", 1),
        ("4\n\nOn Mon, 1 Jan 2025, Help <help@example.com> wrote:\n> Reply with 1 to 5", 4),
        ("5 - great\n> How satisfied are you? 1 (very dissatisfied) to 5", 5),
        # not a rating
        ("", None),
        ("It still does not work", None),
        ("6", None),
        ("0", None),
        ("45", None),
        ("4.5", None),
        ("4/10", None),
        ("1st of all, thanks", None),
        ("> 5\nthe printer is broken again", None),
        ("Thanks\n5", None),  # the top line only
        ("10分", None),
    ],
)
def test_parse_rating(text: str, score: int | None) -> None:
    assert parse_rating(text) == score


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("5", 5),
        ("  5  \n", 5),
        ("5.", 5),
        ("5!", 5),
        ("５", 5),
        ("４／５", 4),
        ("4/5", 4),
        ("4 out of 5", 4),
        ("4점", 4),
        ("４점", 4),
        ("4分", 4),
        ("5点", 5),
        ("四分", 4),
        ("五星", 5),
        ("★★★★☆", 4),
        ("5점 만점에 4점", 4),
        # quoted survey and signature under the answer
        ("5\n\n> How satisfied are you? 1 (very dissatisfied) to 5", 5),
        ("3\n-- \nAna Kim\nAcme Corp, 12 Main St", 3),
        ("\n\n2\n\n", 2),
        # more to say: a reply for an agent
        ("", None),
        ("the problem came back", None),
        ("5 stars but the fix broke my printer", None),
        ("5 - great", None),
        ("5, thanks a lot!", None),
        ("1\nThe problem came back.", None),
        ("Thanks\n5", None),
        ("5점 감사합니다", None),
        ("1 (very dissatisfied)", None),
        ("6", None),
        ("45", None),
        ("> 5", None),
    ],
)
def test_bare_rating(text: str, score: int | None) -> None:
    assert bare_rating(text) == score
