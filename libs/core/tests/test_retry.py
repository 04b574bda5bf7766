"""RetryPolicy's arithmetic: how long a not-ready event is retried, and who gives up first."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core.bus import ConsumerOptions
from switchboard.core.retry import RetryPolicy


def test_back_off_doubles_from_a_tenth_of_a_second_and_is_capped() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n) for n in range(1, 10)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        5.0,
        5.0,
        5.0,
    ]
    assert policy.delay(10_000) == 5.0  # no overflow however long it has been going
    assert policy.unavailable(1) == 0.1 and policy.unavailable(7) == 1.0


def test_the_default_consumer_outlasts_a_dependency_redelivered_after_two_ack_waits() -> None:
    policy = ConsumerOptions().policy
    assert policy.patience == 2 * 30 + 5 + 5
    # 0.1+0.2+0.4+0.8+1.6+3.2 = 6.3 s, then 5 s a time: 13 more reach 71.3 s ≥ 70 s.
    assert policy.attempts == 20
    assert policy.waited_before(20) == pytest.approx(71.3)
    assert policy.waited_before(19) < policy.patience
    # The old fixed schedule (8 deliveries) gave up after 11.3 s, inside a single ack wait.
    assert policy.waited_before(8) == pytest.approx(11.3)
    assert policy.server_max_deliver == 40


def test_a_small_ack_wait_gives_a_proportionally_small_patience() -> None:
    policy = ConsumerOptions(ack_wait=2.0).policy
    assert policy.patience == 14.0
    assert policy.attempts == 9  # 16.3 s of back-off before the ninth delivery
    fast = ConsumerOptions(ack_wait=1.0, max_backoff=0.2, retry_margin=0.5).policy
    assert fast.patience == pytest.approx(2.7)
    assert fast.waited_before(fast.attempts) >= fast.patience


def test_who_gives_up_when() -> None:
    policy = RetryPolicy(ack_wait=30.0)
    assert not policy.gives_up(19)
    assert policy.gives_up(20)
    # A crashing handler gets as long as a not-ready event, unless the consumer asks for fewer...
    assert not policy.gives_up(19, crashed=True)
    costly = RetryPolicy(ack_wait=600.0, crash_attempts=5)
    assert costly.gives_up(5, crashed=True)
    # ...which never shortens the wait of a not-ready event.
    assert not costly.gives_up(5)
    assert costly.attempts == 248
    # ConsumerOptions(max_deliver=…) is that crash limit, not JetStream's.
    assert ConsumerOptions(ack_wait=600.0, max_deliver=5).policy == costly


@settings(deadline=None)
@given(
    ack_wait=st.floats(min_value=0.5, max_value=900.0),
    max_delay=st.floats(min_value=0.5, max_value=60.0),
    margin=st.floats(min_value=0.0, max_value=120.0),
)
def test_our_code_always_decides_before_the_server(
    ack_wait: float, max_delay: float, margin: float
) -> None:
    policy = RetryPolicy(ack_wait=ack_wait, max_delay=max_delay, margin=margin)
    # The back-offs before the last delivery cover the patience; one delivery fewer does not.
    assert policy.waited_before(policy.attempts) >= policy.patience
    assert policy.waited_before(policy.attempts - 1) < policy.patience
    # Two ack waits of redelivery fit inside it, whatever the back-off.
    assert policy.patience > 2 * ack_wait
    # JetStream's limit leaves as many deliveries again for ones that end without our verdict.
    assert policy.server_max_deliver >= 2 * policy.attempts
    assert max(policy.delay(n) for n in range(1, policy.attempts + 1)) <= max_delay


def test_unusable_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(ack_wait=0)
    with pytest.raises(ValueError):
        RetryPolicy(first_delay=1.0, max_delay=0.5)
    with pytest.raises(ValueError):
        RetryPolicy(crash_attempts=0)
