"""
Prometheus metrics from the state the registrar, a pool element or a pool
user keeps anyway (issue #16).

The machines count (a C{collections.Counter} increment per message); the
collectors here read those counts and the handlespace when scraped, in the
reactor thread, and hand prometheus-client's registry metric families.
Each registrar has a registry of its own (L{registry_for}), never the
global one, so that a test may run several.

prometheus-client's own Twisted resource runs the collection in a thread
of the reactor's pool; our collectors read state that only the reactor
thread may touch, so L{MetricsResource} renders in the reactor thread with
the package's text exposition (and caches the text briefly, so that many
scrapes at once cost one collection).
"""
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource

from rserpool.codes import ASAPType, ENRPType, ErrorCause
from rserpool.web.histogram import FAILOVER_BUCKETS, RESOLUTION_BUCKETS, Histogram

__all__ = [
    "Histogram",
    "RESOLUTION_BUCKETS",
    "FAILOVER_BUCKETS",
    "MetricsResource",
    "registry_for",
    "label",
    "counter",
]

def label(text):
    """
    A label value for a kind, a reason or a cause name: lower case, words
    joined by underscores (C{"Endpoint Unreachable"} -> C{endpoint_unreachable}).
    """
    out = []
    for c in str(text).lower():
        out.append(c if c.isalnum() else "_")
    return "_".join(w for w in "".join(out).split("_") if w)


def counter(name, documentation, labels, values, known=()):
    """
    A L{CounterMetricFamily} with one label from a mapping, every known
    label value present (0 if never counted), so that dashboards see the
    series before the first event.

    @param values: a mapping from label value to count.
    @param known: label values to show even at 0.
    """
    family = CounterMetricFamily(name, documentation, labels=[labels])
    merged = dict.fromkeys(known, 0)
    for key, value in values.items():
        merged[key] = merged.get(key, 0) + value
    for key in sorted(merged):
        family.add_metric([key], merged[key])
    return family


def message_counts(name, documentation, types, received, sent):
    """
    A C{..._messages_total{direction,type}} family.

    @param types: the protocol's type enum (L{ASAPType} or L{ENRPType}).
    @param received: counts by message class (with C{message_type}).
    @param sent: counts by type code.
    """
    family = CounterMetricFamily(name, documentation, labels=["direction", "type"])
    incoming = {}
    for cls, count in list(received.items()):
        code = getattr(cls, "message_type", None)
        incoming[code] = incoming.get(code, 0) + count
    for direction, counts in (("received", incoming), ("sent", sent)):
        for code in types:
            family.add_metric([direction, label(code.name)], counts.get(int(code), 0))
        others = sum(v for k, v in counts.items() if k not in _codes(types))
        if others:
            family.add_metric([direction, "other"], others)
    return family


_CODE_SETS = {}


def _codes(types):
    codes = _CODE_SETS.get(types)
    if codes is None:
        codes = _CODE_SETS[types] = frozenset(int(c) for c in types)
    return codes


#: Causes a registrar rejects registrations with (shown at 0 until then).
REJECTION_CAUSES = tuple(label(c.name) for c in (
    ErrorCause.INVALID_VALUES,
    ErrorCause.INCONSISTENT_POOLING_POLICY,
    ErrorCause.INCONSISTENT_TRANSPORT_TYPE,
    ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION,
    ErrorCause.NON_UNIQUE_PE_IDENTIFIER,
    ErrorCause.LACK_OF_RESOURCES,
    ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS,
))


def cause_label(cause):
    """
    The label of an error cause code: its RFC 5354 name in lower case.
    """
    try:
        return label(ErrorCause(cause).name)
    except ValueError:
        return "cause_0x%04x" % cause


class MetricsResource(Resource):
    """
    C{/metrics}: a registry in the Prometheus text format (or OpenMetrics,
    as the scraper's C{Accept} header asks), rendered in the reactor thread,
    the text kept for C{cache} seconds.
    """

    isLeaf = True

    def __init__(self, registry, clock, cache=1.0):
        Resource.__init__(self)
        self.registry = registry
        self.clock = clock
        self.cache = cache
        self._cached = {}

    def render_GET(self, request):
        accept = request.getHeader("accept") or ""
        encoder, content_type = choose_encoder(accept)
        now = self.clock.seconds()
        hit = self._cached.get(content_type)
        if hit is not None and now - hit[0] < self.cache:
            body = hit[1]
        else:
            body = encoder(self.registry)
            self._cached[content_type] = (now, body)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body

    render_HEAD = render_GET


def registry_for(*collectors):
    """
    A registry of its own holding C{collectors}.
    """
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


# Re-exported for the collectors.
__all__ += ["GaugeMetricFamily", "CounterMetricFamily", "ASAPType", "ENRPType",
            "message_counts", "cause_label", "REJECTION_CAUSES"]
