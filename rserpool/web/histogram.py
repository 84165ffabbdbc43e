"""
A histogram cheap enough for a hot path, with no dependency: a bisection
and two additions per observation (prometheus-client's takes a lock).  A
collector turns it into a metric family when scraped.
"""
import bisect

__all__ = ["Histogram", "RESOLUTION_BUCKETS", "FAILOVER_BUCKETS"]

#: Bucket bounds of C{rserpool_handle_resolution_seconds} (a registrar
#: answers in about 70 microseconds).
RESOLUTION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                      0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Bucket bounds of the times to failover (keep-alive and hunt timers:
#: seconds).
FAILOVER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)


class Histogram:
    """
    A histogram that costs a bisection and two additions per observation
    (prometheus-client's takes a lock): read by a collector.

    @ivar bounds: the buckets' upper bounds, ascending.
    @ivar counts: observations per bucket (the last: above every bound).
    @ivar sum: the sum of the observations.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value):
        """
        Count one observation.
        """
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self):
        """
        How many observations.
        """
        return sum(self.counts)

    def family(self, name, documentation):
        """
        A L{HistogramMetricFamily} of the observations so far.
        """
        buckets = []
        total = 0
        for bound, count in zip(self.bounds, self.counts):
            total += count
            buckets.append((_number(bound), total))
        total += self.counts[-1]
        buckets.append(("+Inf", total))
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(name, documentation)
        family.add_metric([], buckets, self.sum)
        return family


def _number(value):
    return repr(float(value))
