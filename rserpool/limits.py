"""
What one source may make a registrar hold or do, and how much it may make
it log (RFC 5355 sections 2.1, 2.2, 2.13 and 3: flooding).

A limit is only as good as its key.  A connection is no key: an attacker
opens another one for free.  L{principal} names what an attacker cannot
cheaply multiply: the TLS-PSK identity it proved where there is one, else
its source address, an IPv6 address taken as its prefix (a /64 by default:
one host gets a whole /64 and picks addresses in it at will).

 - L{TokenBucket} and L{KeyedBuckets}: rates (handle resolutions, Endpoint
   Unreachable reports per second and principal), with a bounded number of
   keys.
 - L{KeyedCounter}: counts with a ceiling (PEs registered, pools created,
   connections open per principal).
 - L{RefusalLog}: every refusal is counted, and logged at a bounded rate:
   the first of a kind from a source at once, then one summary line per
   kind and interval, whatever the input.
 - L{EventLog}: a bounded rate of lines for events a peer can cause at will
   (registrations, removals, bad messages), with a count of what was left
   out.

Pure bookkeeping: no reactor; the caller passes the time.
"""
import collections
import ipaddress

from twisted.logger import Logger

__all__ = [
    "principal",
    "host_principal",
    "principal_text",
    "TokenBucket",
    "KeyedBuckets",
    "KeyedCounter",
    "RefusalLog",
    "EventLog",
]


def principal(identity, address, ipv6_prefix=64):
    """
    The key that limits are counted by.

    @param identity: the TLS-PSK identity the peer proved (C{bytes}), or
        C{None}.
    @param address: the peer's L{ipaddress} address, or C{None}.
    @param ipv6_prefix: how many leading bits of an IPv6 address name one
        source (128 for the whole address).
    @return: a hashable key: C{("identity", bytes)}, C{("address",
        IPv4Address)}, C{("address", IPv6Network)} or C{("unknown",)}.
    """
    if identity is not None:
        return ("identity", bytes(identity))
    if address is None:
        return ("unknown",)
    if address.version == 6 and ipv6_prefix < 128:
        host_bits = 128 - ipv6_prefix
        network = ipaddress.IPv6Network(((int(address) >> host_bits) << host_bits, ipv6_prefix))
        return ("address", network)
    return ("address", address)


def host_principal(host, ipv6_prefix=64):
    """
    The L{principal} of a peer known only by its textual address (a
    listener's connection before any identity is proved): C{("unknown",)}
    when C{host} is not an address.
    """
    from rserpool.interfaces import normalize_address

    try:
        address = normalize_address(host)
    except (AttributeError, TypeError, ValueError):
        address = None
    return principal(None, address, ipv6_prefix)


def principal_text(key):
    """
    A principal for a log line: C{192.0.2.1}, C{2001:db8::/64},
    C{identity 'pe-7'}.
    """
    if key[0] == "identity":
        return "identity %r" % (key[1].decode("ascii", "replace"),)
    if key[0] == "address":
        return str(key[1])
    return "an unknown source"


class TokenBucket:
    """
    A rate with a burst: C{rate} tokens a second, at most C{burst} saved.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate, burst, now):
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now, cost=1.0):
        """
        Take C{cost} tokens if there are that many.

        @return: whether they were there.
        """
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class KeyedBuckets:
    """
    One L{TokenBucket} per key, at most C{max_keys} of them: the least
    recently used is dropped first (it comes back full, which only helps a
    source that has been quiet).

    @ivar rate: tokens per second per key.
    @ivar burst: the most tokens a key saves up.
    """

    def __init__(self, rate, burst=None, max_keys=65536):
        """
        @param rate: requests per second per key (positive).
        @param burst: the most requests at once; twice the rate, at least
            1, by default.
        @param max_keys: the most keys kept.
        @raise ValueError: a rate, burst or key count that is not positive.
        """
        if not rate > 0:
            raise ValueError("a rate must be positive, not %r" % (rate,))
        if burst is None:
            burst = max(1.0, 2.0 * rate)
        if not burst >= 1 or max_keys < 1:
            raise ValueError("burst must be at least 1 and max_keys positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets = collections.OrderedDict()

    def permit(self, key, now, cost=1.0):
        """
        Count a request of C{key}.

        @return: whether it is within the key's rate.
        """
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
            bucket = buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            buckets.move_to_end(key)
        return bucket.take(now, cost)

    def __len__(self):
        return len(self._buckets)


class KeyedCounter:
    """
    How many things each key holds, with a ceiling per key.

    @ivar limit: the most things a key may hold; C{None} for no ceiling.
    """

    def __init__(self, limit):
        self.limit = limit
        self._counts = {}

    def can_add(self, key):
        """
        Whether C{key} may hold one more.
        """
        return self.limit is None or self._counts.get(key, 0) < self.limit

    def add(self, key):
        """
        Count one more for C{key} (whether or not it was allowed).
        """
        self._counts[key] = self._counts.get(key, 0) + 1

    def remove(self, key):
        """
        Count one less for C{key}.
        """
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key):
        """
        What C{key} holds.
        """
        return self._counts.get(key, 0)

    def __len__(self):
        return len(self._counts)


class RefusalLog:
    """
    Counts refusals and logs them at a bounded rate.

    The first refusal of a kind from a principal in an interval is logged
    at once (at most L{first_lines} such lines an interval); the rest are
    counted, and when an interval has passed one summary line per kind
    names the total and the sources that were refused most.  So the log
    grows by at most C{kinds * (first_lines + 1)} lines an interval
    whatever a flood sends.

    @ivar totals: refusals counted since the start, by kind (for metrics).
    """

    log = Logger()
    _logger = None

    #: Sources named in a summary line.
    top = 5
    #: Immediate lines per interval, all kinds together.
    first_lines = 20
    #: Principals counted per kind and interval before the rest go into
    #: one "other sources" count.
    max_sources = 1024

    def __init__(self, interval=10.0, log=None):
        """
        @param interval: seconds between summaries.
        @param log: a L{Logger} to write to, or a function that returns the
            one to write to now (the owner's C{log}, which a test may
            replace); this class's by default.
        """
        self.interval = interval
        if log is not None:
            self._logger = log
        self.totals = collections.Counter()
        self._counts = {}
        self._others = collections.Counter()
        self._start = None
        self._told = 0

    def refused(self, kind, key, now, reason=""):
        """
        Count one refusal.

        @param kind: what was refused, e.g. C{"handle resolution"}.
        @param key: the L{principal} it came from.
        @param now: the time.
        @param reason: a few words for the first line, e.g. C{"more than 100
            per second"}.
        """
        self.flush(now)
        if self._start is None:
            self._start = now
        self.totals[kind] += 1
        counts = self._counts.setdefault(kind, collections.Counter())
        if key in counts or len(counts) < self.max_sources:
            first = key not in counts
            counts[key] += 1
        else:
            first = False
            self._others[kind] += 1
        if first and self._told < self.first_lines:
            self._told += 1
            self._log().warn(
                "refusing {kind} from {source}: {reason} (further refusals are summarized "
                "every {interval:g} s)", kind=kind, source=principal_text(key), reason=reason,
                interval=self.interval, refusal=kind, principal=principal_text(key))

    def _log(self):
        logger = self._logger
        if logger is None:
            return self.log
        return logger if isinstance(logger, Logger) else logger()

    def flush(self, now, force=False):
        """
        Write the summaries of an interval that has passed (or of the
        current one, with C{force}).
        """
        if self._start is None or (not force and now - self._start < self.interval):
            return
        for kind, counts in sorted(self._counts.items()):
            others = self._others.get(kind, 0)
            total = sum(counts.values()) + others
            first = sum(1 for _ in counts)
            if total <= first and not others:
                continue  # each one was told already
            busiest = ", ".join("%s: %d" % (principal_text(k), n)
                                for k, n in counts.most_common(self.top))
            more = len(counts) - min(len(counts), self.top)
            self._log().warn(
                "refused {total} {kind} request(s) in {seconds:.0f} s from {sources} source(s) "
                "({busiest}{more})", total=total, kind=kind, seconds=now - self._start,
                sources=len(counts) + (1 if others else 0), busiest=busiest,
                more=(", %d more" % (more + (1 if others else 0))) if more or others else "",
                refusal=kind)
        self._counts = {}
        self._others = collections.Counter()
        self._start = None
        self._told = 0


class EventLog:
    """
    A bounded rate of log lines for events a peer can cause at will: at
    most C{rate} lines a second (C{burst} at once); the lines left out are
    counted and said in one line when lines may be written again.
    """

    def __init__(self, log, rate=100.0, burst=200.0):
        """
        @param log: a L{Logger}, or a function that returns the one to
            write to now.
        @param rate: lines a second.
        @param burst: lines at once.
        """
        self._log = log
        self._bucket = TokenBucket(rate, burst, None)
        self.suppressed = 0

    def _logger(self):
        log = self._log
        return log if isinstance(log, Logger) else log()

    def _may(self, now):
        if self._bucket.stamp is None:
            self._bucket.stamp = now
        if self._bucket.take(now):
            if self.suppressed:
                self._logger().info("{count} log line(s) left out (more than {rate:g} a second)",
                               count=self.suppressed, rate=self._bucket.rate)
                self.suppressed = 0
            return True
        self.suppressed += 1
        return False

    def info(self, now, text, **fields):
        """
        Log C{text} at info level if the rate allows.
        """
        if self._may(now):
            self._logger().info(text, **fields)

    def warn(self, now, text, **fields):
        """
        Log C{text} at warn level if the rate allows.
        """
        if self._may(now):
            self._logger().warn(text, **fields)
