"""Which replica reads which mailbox (pure): balanced, the same on every replica, and only by a
replica that has the mailbox in its configuration."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from switchboard.email_ingest.domain.assignment import owners

BOXES = [f"mailboxes.t{t}.box{i}" for t in range(3) for i in range(7)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 21, 30])
def test_every_mailbox_has_one_reader_and_none_reads_more_than_its_share(n: int) -> None:
    replicas = [f"email-ingest-{i}" for i in range(n)]
    chosen = owners(dict.fromkeys(replicas, BOXES))
    assert set(chosen) == set(BOXES) and set(chosen.values()) <= set(replicas)
    assert max(Counter(chosen.values()).values()) <= math.ceil(len(BOXES) / n)


def test_every_replica_works_out_the_same_answer_whatever_order_it_lists_things_in() -> None:
    one = owners({"c": BOXES, "a": BOXES, "b": BOXES})
    other = owners({"a": list(reversed(BOXES)), "b": set(BOXES), "c": sorted(BOXES)})
    assert one == other


def test_two_replicas_share_four_mailboxes_two_and_two() -> None:
    boxes = [f"mailboxes.demo.box{i}" for i in range(4)]
    chosen = owners({"replica-a": boxes, "replica-b": boxes})
    assert sorted(Counter(chosen.values()).values()) == [2, 2]


def test_a_mailbox_goes_only_to_a_replica_that_has_it_even_over_its_share() -> None:
    old, new = BOXES[:-3], BOXES  # a rollout: "new" has three more mailboxes than "old"
    chosen = owners({"old": old, "new": new, "idle": []})
    assert set(chosen) == set(BOXES)
    assert all(chosen[box] == "new" for box in BOXES[-3:])
    assert "idle" not in chosen.values()  # no mailboxes of its own: it takes none of the others'
    only = owners({"a": BOXES, "b": BOXES[:1]})
    assert Counter(only.values())["a"] >= len(BOXES) - 1


def test_no_replica_no_reader() -> None:
    assert owners({}) == {}
    assert owners({"a": []}) == {}
