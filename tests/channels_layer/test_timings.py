"""The cheap histograms of the metrics: Prometheus's bucket semantics (``le``: at most)."""

from channels_layer import timings
from channels_layer.timings import LATENCY_BUCKETS, TimingsFamily


def test_observations_land_in_cumulative_buckets_with_their_sum():
    family = TimingsFamily("test_timings_seconds", "a test", ["kind"])
    try:
        child = family.labels("a")
        assert family.labels("a") is child
        for seconds in (0.00002, 0.0001, 0.0003, 0.0003, 20.0):  # below all, on a bound, ...
            child.observe(seconds)
        [metric] = [family.metric()]
        samples = {(s.name, s.labels.get("le")): s.value for s in metric.samples}
    finally:
        timings.families.remove(family)
    assert samples["test_timings_seconds_bucket", "0.0001"] == 2
    assert samples["test_timings_seconds_bucket", "0.00025"] == 2
    assert samples["test_timings_seconds_bucket", "0.0005"] == 4
    assert samples["test_timings_seconds_bucket", str(LATENCY_BUCKETS[-1])] == 4
    assert samples["test_timings_seconds_bucket", "+Inf"] == 5
    assert samples["test_timings_seconds_count", None] == 5
    assert abs(samples["test_timings_seconds_sum", None] - 20.00072) < 1e-9
