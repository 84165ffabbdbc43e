"""
Metrics of pool elements and pool users (issue #16): C{rserpool pe --http
ENDPOINT} / C{PoolElementService(http=...)} and C{rserpool terminal --http
ENDPOINT} serve C{/metrics} and C{/healthz} on a listener of their own
(L{rserpool.web.http}).

A pool element counts its registrations, re-registrations, failovers (a
new home registrar after losing one: hunted, or adopted in a takeover) and
the time each took, and its registrar problems; a pool user its
resolutions, the Endpoint Unreachable reports it sent, and its sessions'
failovers with their time.
"""
import collections

from twisted.internet import defer
from twisted.web.resource import Resource

from rserpool.web.common import handle_text, hex_id
from rserpool.web.histogram import FAILOVER_BUCKETS, Histogram
from rserpool.web.http import listen_http
from rserpool.web.metrics import (
    CounterMetricFamily,
    GaugeMetricFamily,
    MetricsResource,
    counter,
    label,
    registry_for,
)

__all__ = ["PoolElementMonitor", "PoolElementCollector", "PoolUserCollector", "NodeHTTP",
           "PROBLEMS"]

#: What can go wrong with a registrar, seen from a PE
#: (L{rserpool.asap.pool_element.RegistrarProblem}).
PROBLEMS = ("unreachable", "timeout", "no_answer", "closed", "lost")


class PoolElementMonitor:
    """
    What a L{rserpool.pe.PoolElementService} counts beside its machine.

    @ivar failovers: home registrars found after losing one.
    @ivar failover_time: a L{Histogram} of the seconds from the loss to
        the new home.
    @ivar problems: registrar problems, by kind.
    """

    def __init__(self, clock):
        self.clock = clock
        self.failovers = 0
        self.failover_time = Histogram(FAILOVER_BUCKETS)
        self.problems = collections.Counter()
        self._lost_at = None

    def problem(self, what):
        """
        A L{RegistrarProblem}: C{"lost"} starts the failover clock.
        """
        self.problems[what] += 1
        if what == "lost" and self._lost_at is None:
            self._lost_at = self.clock.seconds()

    def home(self):
        """
        Registered again, or adopted by a new home registrar.
        """
        if self._lost_at is not None:
            self.failovers += 1
            self.failover_time.observe(self.clock.seconds() - self._lost_at)
            self._lost_at = None


class PoolElementCollector:
    """
    C{rserpool_pe_*}: one pool element's metrics.
    """

    def __init__(self, service):
        self.service = service

    def collect(self):
        pe = self.service
        machine = pe.machine
        monitor = pe.monitor
        info = GaugeMetricFamily("rserpool_pe_info", "This PE: its pool and identifier (hex).",
                                 labels=["pool", "pe"])
        info.add_metric([handle_text(pe.pool_handle), hex_id(pe.identifier)], 1)
        yield info
        yield GaugeMetricFamily("rserpool_pe_registered",
                                "1 while a registrar holds this PE's registration.",
                                value=1 if pe.is_registered else 0)
        home = GaugeMetricFamily("rserpool_pe_home_registrar",
                                 "The home registrar's id (hex), 1 while known.", labels=["id"])
        if pe.home_registrar:
            home.add_metric([hex_id(pe.home_registrar)], 1)
        yield home
        yield CounterMetricFamily(
            "rserpool_pe_registrations", "Registrations accepted: the first at a registrar "
            "(at start, after a hunt).", value=machine.registrations if machine else 0)
        yield CounterMetricFamily(
            "rserpool_pe_reregistrations", "Periodic re-registrations accepted.",
            value=machine.reregistrations if machine else 0)
        yield CounterMetricFamily(
            "rserpool_pe_failovers", "New home registrars after losing one (hunted, or "
            "adopted in a takeover).", value=monitor.failovers)
        yield monitor.failover_time.family(
            "rserpool_pe_failover_seconds",
            "Seconds from losing the home registrar to being registered again.")
        yield counter("rserpool_pe_registrar_problems",
                      "Registrar attempts that failed, and losses of the home registrar, by "
                      "kind.", "kind", {label(k): n for k, n in monitor.problems.items()},
                      PROBLEMS)


class PoolUserCollector:
    """
    C{rserpool_pu_*}: one pool user's metrics (L{rserpool.pu.PoolUser}).
    """

    def __init__(self, pool_user):
        self.pool_user = pool_user

    def collect(self):
        counts = self.pool_user.counts
        yield CounterMetricFamily("rserpool_pu_resolutions",
                                  "Handle resolutions answered by a registrar.",
                                  value=counts.get("resolutions", 0))
        yield CounterMetricFamily("rserpool_pu_resolution_failures",
                                  "Handle resolutions that failed (unknown pool, no registrar).",
                                  value=counts.get("resolution failures", 0))
        yield CounterMetricFamily("rserpool_pu_unreachable_reports",
                                  "Endpoint Unreachable reports sent to a registrar.",
                                  value=counts.get("unreachable reports", 0))
        yield CounterMetricFamily("rserpool_pu_failovers",
                                  "Sessions that went on with another PE.",
                                  value=counts.get("failovers", 0))
        yield self.pool_user.failover_time.family(
            "rserpool_pu_failover_seconds",
            "Seconds from losing a PE to the session going on with the next.")


class _Health(Resource):
    isLeaf = True

    def __init__(self, check):
        Resource.__init__(self)
        self.check = check

    def render_GET(self, request):
        ok = self.check()
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n" if ok else b"not registered\n"


class NodeHTTP:
    """
    The HTTP listener of a PE or pool user: C{/metrics} and C{/healthz}.
    """

    def __init__(self, reactor, collectors, healthy=lambda: True, limits=None, cache=0.0):
        self.reactor = reactor
        self.registry = registry_for(*collectors)
        self.healthy = healthy
        self.limits = limits
        self.cache = cache
        self.port = None

    def resource(self):
        root = Resource()
        root.putChild(b"metrics", MetricsResource(self.registry, self.reactor, self.cache))
        root.putChild(b"healthz", _Health(self.healthy))
        return root

    def listen(self, description):
        """
        @return: a L{Deferred} firing with the port.
        """
        def listening(result):
            self.port = result[0]
            return self.port

        return listen_http(self.reactor, description, self.resource(),
                           self.limits).addCallback(listening)

    def stop(self):
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)
