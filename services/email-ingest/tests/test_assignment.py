"""Which replica reads which mailbox (pure): balanced, and the same on every replica."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from switchboard.email_ingest.domain.assignment import owners

BOXES = [f"mailboxes.t{t}.box{i}" for t in range(3) for i in range(7)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 21, 30])
def test_every_mailbox_has_one_reader_and_none_reads_more_than_its_share(n: int) -> None:
    replicas = [f"email-ingest-{i}" for i in range(n)]
    chosen = owners(BOXES, replicas)
    assert set(chosen) == set(BOXES) and set(chosen.values()) <= set(replicas)
    assert max(Counter(chosen.values()).values()) <= math.ceil(len(BOXES) / n)


def test_every_replica_works_out_the_same_answer_whatever_order_it_lists_things_in() -> None:
    replicas = ["c", "a", "b"]
    assert owners(BOXES, replicas) == owners(list(reversed(BOXES)), sorted(replicas))


def test_two_replicas_share_four_mailboxes_two_and_two() -> None:
    boxes = [f"mailboxes.demo.box{i}" for i in range(4)]
    assert sorted(Counter(owners(boxes, ["replica-a", "replica-b"]).values()).values()) == [2, 2]


def test_no_replica_no_reader() -> None:
    assert owners(BOXES, []) == {}
    assert owners([], ["a"]) == {}
