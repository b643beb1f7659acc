import pytest

from chat.ratelimit import TokenBucket


def test_a_burst_then_the_steady_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back at 2 per second
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] += 100  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_nonsense_limits_are_refused():
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=1)
