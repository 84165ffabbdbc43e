"""
Request rate limits per pool user: the registrar's defence against floods
of Endpoint Unreachable messages (RFC 5355 section 2.13: their number
"SHOULD be limited") and of handle resolutions, measured as RSPLIB's
registrar measures them for its C{-maxeurate} and C{-maxhrrate} options.

Per pool user connection, the pool handles of its requests are hashed into
L{BUCKETS} buckets (handles that share a bucket share a rate, so a pool
user's state stays bounded however many handles it names), and each bucket
keeps the times of the last L{ENTRIES} requests.  The rate of a bucket is
the number of times kept divided by the time between the first and the
last of them (RSPLIB's definition: with n times it counts n, not n - 1,
intervals).  A request is permitted when, counted in, the rate is at most
the threshold; a request is counted whether permitted or not, so a pool
user that keeps flooding stays refused, and one that slows down is served
again once its last L{ENTRIES} requests are spread out enough.

Pure bookkeeping: no reactor; the caller passes the time.
"""
import zlib
from collections import deque

__all__ = ["RequestRateLimit", "BUCKETS", "ENTRIES"]

#: Buckets per pool user (RSPLIB's TSHT_BUCKETS).
BUCKETS = 64
#: Request times kept per bucket (RSPLIB's TSHT_ENTRIES).
ENTRIES = 16


class RequestRateLimit:
    """
    A request rate threshold per pool user and pool handle.

    @ivar threshold: the most requests per second permitted.
    """

    def __init__(self, threshold):
        """
        @param threshold: requests per second, positive.
        @raise ValueError: the threshold is not positive.
        """
        if not threshold > 0:
            raise ValueError("a rate limit must be positive, not {!r}".format(threshold))
        self.threshold = float(threshold)
        # connection -> {bucket number: deque of times}
        self._users = {}

    def permit(self, connection, handle, now):
        """
        Count a request and say whether it is within the limit.

        @param connection: the pool user's connection (any hashable key).
        @param handle: the pool handle the request names (bytes).
        @param now: the current time (seconds).
        @return: C{True} if the request may be served.
        """
        buckets = self._users.get(connection)
        if buckets is None:
            buckets = self._users[connection] = {}
        bucket = zlib.crc32(handle) % BUCKETS
        times = buckets.get(bucket)
        if times is None:
            times = buckets[bucket] = deque(maxlen=ENTRIES)
        if not times or times[-1] <= now:
            # A time earlier than the last one (the clock went back) is not
            # kept, as in RSPLIB.
            times.append(now)
        return _rate(times) <= self.threshold

    def rate(self, connection, handle):
        """
        @param connection: a pool user's connection.
        @param handle: a pool handle.
        @return: the current request rate (per second) of the bucket of
            C{handle} for this pool user; 0 with fewer than two requests,
            infinite for two or more at the same time.
        """
        times = self._users.get(connection, {}).get(zlib.crc32(handle) % BUCKETS)
        return _rate(times) if times is not None else 0.0

    def forget(self, connection):
        """
        Drop what is known of a pool user (its connection is gone).

        @param connection: its connection.
        """
        self._users.pop(connection, None)

    def __len__(self):
        """
        @return: the number of pool users with state.
        """
        return len(self._users)


def _rate(times):
    # RSPLIB's rate of a bucket's request times: their number over the time
    # from the first to the last.
    if len(times) < 2:
        return 0.0
    duration = times[-1] - times[0]
    if duration <= 0:
        return float("inf")
    return len(times) / duration
