"""The cheap histograms of the metrics: Prometheus's bucket semantics (``le``: at most)."""

from channels_layer import timings
from channels_layer.timings import LATENCY_BUCKETS, TimingsFamily


def test_observations_land_in_cumulative_buckets_with_their_sum():
    family = TimingsFamily("test_timings_seconds", "a test", ["kind"])
    try:
        child = family.labels("a")
        assert family.labels("a") is child
        for seconds in (0.0001, 0.0003, 0.0003, 20.0):  # on a bound, between two, past all
            child.observe(seconds)
        [metric] = [family.metric()]
        samples = {(s.name, s.labels.get("le")): s.value for s in metric.samples}
    finally:
        timings.families.remove(family)
    assert samples["test_timings_seconds_bucket", "0.0001"] == 1
    assert samples["test_timings_seconds_bucket", "0.00025"] == 1
    assert samples["test_timings_seconds_bucket", "0.0005"] == 3
    assert samples["test_timings_seconds_bucket", str(LATENCY_BUCKETS[-1])] == 3
    assert samples["test_timings_seconds_bucket", "+Inf"] == 4
    assert samples["test_timings_seconds_count", None] == 4
    assert abs(samples["test_timings_seconds_sum", None] - 20.0007) < 1e-9
