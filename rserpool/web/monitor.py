"""
A registrar seen from outside: its counters, its recent events, and the
HTTP resources that show them (issue #16).

L{RegistrarMonitor} sits beside a L{rserpool.services.RegistrarService}.
It counts what the machines do not (messages sent, handle resolution
times), keeps a bounded ring of recent events (registrations,
deregistrations, failures, takeovers), and, when the service has an HTTP
endpoint, serves:

 - C{/metrics}: Prometheus text (L{RegistrarCollector});
 - C{/healthz}: 200 while the registrar's listeners are up;
 - C{/readyz}: 200 once ENRP's startup (mentor discovery and the handle
   table download, RFC 5353 section 3.2) is over;
 - C{/api/v1/handlespace} and C{/api/v1/events}: JSON (schema in
   ``doc/operations.rst``);
 - C{/}: the handlespace page (L{rserpool.web.page}), live through
   C{/events} (server-sent events).

All of it reads state the registrar keeps anyway, in the reactor thread.
"""
import collections
import json
import os
import time

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import File

from rserpool.codes import POLICY_FIELDS, ASAPType, ENRPType
from rserpool.receivers import ASAPReceiver, ENRPReceiver
from rserpool.web.common import arg as _arg
from rserpool.web.common import handle_text, hex_id as _id, pe_matches
from rserpool.web.common import int_arg as _int_arg
from rserpool.web.http import HTTPLimits, StreamGuard, listen_http
from rserpool.web.page import HandlespacePage
from rserpool.web.metrics import (
    REJECTION_CAUSES,
    RESOLUTION_BUCKETS,
    CounterMetricFamily,
    GaugeMetricFamily,
    Histogram,
    MetricsResource,
    cause_label,
    counter,
    label,
    message_counts,
    registry_for,
)
from rserpool.wire import DATA_PLUS_CONTROL, HandleResolution

__all__ = [
    "RegistrarMonitor",
    "RegistrarCollector",
    "EventRing",
    "ChangeHub",
    "STATIC",
    "handle_text",
    "pe_json",
    "peer_json",
]

#: The page's packaged stylesheet and script.
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: Kinds of refusal by a limit, shown at 0 until the first.
RATE_LIMIT_KINDS = ("handle_resolution", "endpoint_unreachable", "registration",
                    "asap_connection", "enrp_connection")
#: Takeover outcomes (RFC 5353 section 3.5), shown at 0 until the first.
TAKEOVER_OUTCOMES = ("started", "done", "yielded", "abandoned", "expired", "by_peer")
#: Why TLS handshakes fail (L{rserpool.transport.psk}).
TLS_REASONS = ("timeout", "unknown_identity", "bad_key", "tls_error", "closed")
#: Why PEs leave (L{rserpool.asap.registrar.REMOVAL_REASONS}).
REMOVAL_REASONS = ("deregistered", "keep_alive_timeout", "connection_lost", "unreachable",
                   "registration_life_expired")


class EventRing:
    """
    The last C{size} events, each a C{dict} with C{seq}, C{time} (seconds
    since the epoch), C{kind} (C{registration}, C{deregistration},
    C{failure}, C{takeover}), C{pool}, C{pe} and C{cause}; observers are
    called with each new one.
    """

    def __init__(self, size=256):
        self.events = collections.deque(maxlen=size)
        self.seq = 0
        self.observers = []

    def add(self, when, kind, pool=None, pe=None, cause=None, **extra):
        self.seq += 1
        event = {"seq": self.seq, "time": when, "kind": kind, "pool": pool, "pe": pe,
                 "cause": cause}
        event.update(extra)
        self.events.append(event)
        for observer in self.observers:
            observer(event)
        return event

    def since(self, seq, limit=None):
        """
        The events after C{seq}, oldest first (at most C{limit}, the newest).
        """
        out = [e for e in self.events if e["seq"] > seq]
        if limit is not None and len(out) > limit:
            out = out[-limit:]
        return out


def _counting_send(connection, counts):
    # Messages sent over one connection, by type code: the instance's send
    # and send_encoded are replaced by counting ones (one increment each).
    send = connection.send
    send_encoded = connection.send_encoded

    def counted_send(message):
        counts[message.message_type] += 1
        send(message)

    def counted_send_encoded(data):
        if data:
            counts[data[0]] += 1
        send_encoded(data)

    try:
        connection.send = counted_send
        connection.send_encoded = counted_send_encoded
    except AttributeError:
        pass


def _stop_counting(connection):
    # The counting functions hold the connection's own bound methods: a
    # cycle that would keep a closed connection, its transport and what
    # its peer did not read until the garbage collector runs (issue #14,
    # a slow-reader flood).
    for name in ("send", "send_encoded"):
        try:
            delattr(connection, name)
        except AttributeError:
            pass


class MeteredASAPReceiver(ASAPReceiver):
    """
    L{rserpool.receivers.ASAPReceiver} that also counts what is sent and
    times handle resolutions, from taking the request up to writing its
    answer (with the injected clock).
    """

    def __init__(self, registrar, clock, monitor, run=None):
        ASAPReceiver.__init__(self, registrar, clock, run)
        self.sent = monitor.sent_asap
        self.resolution = monitor.resolution

    def connection_made(self, connection):
        _counting_send(connection, self.sent)
        ASAPReceiver.connection_made(self, connection)

    def message_received(self, connection, message, _resolution=HandleResolution):
        now = self.clock.seconds()
        self.run(self.registrar.message_received(connection, message, now))
        if type(message) is _resolution:
            self.resolution.observe(self.clock.seconds() - now)

    def connection_lost(self, connection):
        ASAPReceiver.connection_lost(self, connection)
        _stop_counting(connection)


class MeteredENRPReceiver(ENRPReceiver):
    """
    L{rserpool.receivers.ENRPReceiver} that also counts what is sent.
    """

    def __init__(self, server, clock, monitor, outgoing=False, run=None):
        ENRPReceiver.__init__(self, server, clock, outgoing, run)
        self.sent = monitor.sent_enrp

    def connection_made(self, connection):
        _counting_send(connection, self.sent)
        ENRPReceiver.connection_made(self, connection)

    def connection_lost(self, connection):
        ENRPReceiver.connection_lost(self, connection)
        _stop_counting(connection)


def _listener(port, what):
    host = port.getHost()
    kind = str(getattr(host, "type", "TCP")).lower()
    address = getattr(host, "host", "?")
    if ":" in str(address):
        address = "[%s]" % address
    return "%s %s %s:%s" % (what, kind, address, getattr(host, "port", "?"))


class RegistrarCollector:
    """
    The registrar's metrics, computed when scraped (see ``doc/operations.rst``
    for their meanings).
    """

    def __init__(self, monitor):
        self.monitor = monitor

    def collect(self):
        monitor = self.monitor
        service = monitor.service
        registrar = service.registrar
        hs = registrar.handlespace
        enrp = service.enrp
        own = registrar.server_id
        pools = hs.pools()

        info = GaugeMetricFamily("rserpool_registrar_info", "This registrar's id (hex).",
                                 labels=["id"])
        info.add_metric([_id(own)], 1)
        yield info
        yield GaugeMetricFamily("rserpool_uptime_seconds", "Seconds since the registrar started.",
                                value=monitor.uptime())
        yield GaugeMetricFamily("rserpool_pools", "Pools in the handlespace.", value=len(pools))
        elements = GaugeMetricFamily("rserpool_pool_elements", "PEs of each pool.",
                                     labels=["pool"])
        for pool in pools:
            elements.add_metric([handle_text(pool.handle)], len(pool))
        yield elements
        yield GaugeMetricFamily("rserpool_pool_elements_owned",
                                "PEs this registrar is home for.", value=hs.owned_count(own))
        yield message_counts("rserpool_asap_messages", "ASAP messages, by direction and type.",
                             ASAPType, registrar.received, monitor.sent_asap)
        yield message_counts("rserpool_enrp_messages", "ENRP messages, by direction and type.",
                             ENRPType, enrp.received if enrp is not None else {},
                             monitor.sent_enrp)
        yield counter("rserpool_registrations_rejected",
                      "Registrations rejected, by RFC 5354 cause.", "cause",
                      {cause_label(c): n for c, n in registrar.rejected.items()}, REJECTION_CAUSES)
        limited = collections.Counter()
        for totals in (registrar.refusals.totals, service.refusals.totals):
            for kind, n in totals.items():
                limited[label(kind)] += n
        yield counter("rserpool_rate_limited", "Requests refused by a limit (doc/security.rst), "
                      "by kind.", "kind", limited, RATE_LIMIT_KINDS)
        yield monitor.resolution.family(
            "rserpool_handle_resolution_seconds",
            "Time from taking a Handle Resolution up to writing its answer.")
        yield GaugeMetricFamily("rserpool_enrp_peers", "ENRP peers in the peer list.",
                                value=len(enrp.peers) if enrp is not None else 0)
        yield GaugeMetricFamily("rserpool_enrp_synchronized",
                                "1 once ENRP startup (mentor, handle table) is over.",
                                value=1 if monitor.ready() else 0)
        yield counter("rserpool_takeovers", "ENRP takeovers of failed registrars, by outcome.",
                      "outcome",
                      {label(k): n for k, n in (enrp.takeovers if enrp is not None else {}).items()},
                      TAKEOVER_OUTCOMES)
        failures = collections.Counter()
        for creator in list(service.psk_creators):
            for reason, n in getattr(creator, "handshake_failures", {}).items():
                failures[label(reason)] += n
        yield counter("rserpool_tls_handshake_failures",
                      "TLS handshakes that failed on a listener, by reason.", "reason",
                      failures, TLS_REASONS if service.psk_creators else ())
        yield counter("rserpool_pe_removals", "PEs removed from the handlespace by this "
                      "registrar, by reason.", "reason",
                      {label(k): n for k, n in monitor.removals.items()}, REMOVAL_REASONS)
        if enrp is not None:
            yield counter("rserpool_enrp_refused", "ENRP messages refused (RFC 5355 sections "
                          "2.5 and 2.17), by message or reason.", "message",
                          {label(k): n for k, n in enrp.refused.items()})
        yield self._connections(service, registrar, enrp, monitor)
        refused = CounterMetricFamily("rserpool_connections_refused",
                                      "Connections refused by the budget, by reason.",
                                      labels=["reason"])
        for reason, n in sorted(service.connection_budget.refused.items()):
            refused.add_metric([label(reason)], n)
        refused.add_metric(["http"], monitor.site.refused if monitor.site is not None else 0)
        yield refused
        collector = getattr(service, "namedServices", {}).get("collector")
        if collector is not None:
            yield from self._collector(collector.pauses)

    def _collector(self, pauses):
        generations = ("young", "middle", "full")
        count = CounterMetricFamily("rserpool_gc_collections",
                                    "Passes of the garbage collector, by generation.",
                                    labels=["generation"])
        seconds = CounterMetricFamily("rserpool_gc_pause_seconds",
                                      "Seconds the garbage collector stopped the registrar, by "
                                      "generation.", labels=["generation"])
        longest = GaugeMetricFamily("rserpool_gc_pause_longest_seconds",
                                    "The longest pass of the garbage collector, by generation.",
                                    labels=["generation"])
        for i, name in enumerate(generations):
            count.add_metric([name], pauses.count[i])
            seconds.add_metric([name], pauses.seconds[i])
            longest.add_metric([name], pauses.longest[i])
        return count, seconds, longest

    def _connections(self, service, registrar, enrp, monitor):
        family = GaugeMetricFamily("rserpool_connections", "Connections open, by listener.",
                                   labels=["listener"])
        by_port = {}
        counts = collections.OrderedDict()
        for port in service.asap_ports:
            name = _listener(port, "asap")
            by_port[("asap", getattr(port.getHost(), "port", None))] = name
            counts[name] = 0
        for port in service.enrp_ports:
            name = _listener(port, "enrp")
            by_port[("enrp", getattr(port.getHost(), "port", None))] = name
            counts[name] = 0
        for conn in list(registrar.connections):
            local = getattr(conn, "local", None) or (None, None)
            name = by_port.get(("asap", local[1]), "asap outgoing")
            counts[name] = counts.get(name, 0) + 1
        if enrp is not None:
            for conn in enrp.connections:
                info = enrp._conns.get(conn)
                if info is not None and info.outgoing:
                    name = "enrp outgoing"
                else:
                    local = getattr(conn, "local", None) or (None, None)
                    name = by_port.get(("enrp", local[1]), "enrp other")
                counts[name] = counts.get(name, 0) + 1
        if monitor.http_port is not None:
            counts[_listener(monitor.http_port, "http")] = monitor.site.open
        for name, n in counts.items():
            family.add_metric([name], n)
        return family


class ChangeHub:
    """
    The page's live clients (server-sent events): each gets one C{change}
    message at most every C{interval} seconds when the handlespace or the
    events changed, naming the new events; a comment every C{heartbeat}
    seconds keeps idle connections alive.  A change made by a peer (which
    makes no event here) is found by comparing a cheap fingerprint of the
    handlespace every C{interval} seconds while clients are connected.
    """

    def __init__(self, clock, fingerprint, limits, interval=0.5, heartbeat=15.0,
                 max_clients=64):
        self.clock = clock
        self.fingerprint = fingerprint
        self.limits = limits
        self.interval = interval
        self.heartbeat = heartbeat
        self.max_clients = max_clients
        self.clients = set()
        self._pending = []
        self._call = None
        self._beat = None
        self._last = None
        self._quiet = 0.0

    def add(self, request):
        """
        Stream changes to C{request} (a GET of C{/events}).

        @return: the L{StreamGuard}, or C{None} when there are as many
            clients as allowed.
        """
        if len(self.clients) >= self.max_clients:
            return None
        guard = StreamGuard(request, self.limits, self.clock, on_close=self.clients.discard)
        self.clients.add(guard)
        if self._call is None:
            self._last = self.fingerprint()
            self._call = self.clock.callLater(self.interval, self._tick)
        return guard

    def event(self, event):
        """
        An event happened: clients hear of it within C{interval}.
        """
        if self.clients:
            self._pending.append(event)
            if len(self._pending) > 50:
                del self._pending[:-50]

    def _tick(self):
        self._call = None
        if not self.clients:
            self._pending = []
            return
        now = self.clock.seconds()
        current = self.fingerprint()
        if self._pending or current != self._last:
            self._last = current
            pending, self._pending = self._pending[-20:], []
            payload = json.dumps({"events": pending}, separators=(",", ":"))
            self.send(("event: change\ndata: %s\n\n" % payload).encode("utf-8"))
            self._quiet = now
        elif now - self._quiet >= self.heartbeat:
            self.send(b": ping\n\n")
            self._quiet = now
        self._call = self.clock.callLater(self.interval, self._tick)

    def send(self, data):
        """
        Write C{data} to every client.
        """
        for guard in list(self.clients):
            guard.write(data)

    def stop(self):
        """
        End every stream.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for guard in list(self.clients):
            guard.stop()
            try:
                guard.request.unregisterProducer()
                guard.request.finish()
            except Exception:
                pass
        self.clients.clear()


class _Static(File):
    # The packaged assets, without a directory listing.

    def directoryListing(self):
        from twisted.web.resource import NoResource

        return NoResource()


class _Events(Resource):
    isLeaf = True

    def __init__(self, monitor):
        Resource.__init__(self)
        self.monitor = monitor

    def render_GET(self, request):
        hub = self.monitor.hub
        guard = hub.add(request)
        if guard is None:
            request.setResponseCode(503)
            request.setHeader(b"retry-after", b"30")
            return b"too many live clients\n"
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.notifyFinish().addBoth(lambda _: guard.stop())
        guard.write(b"retry: 2000\n\nevent: hello\ndata: {}\n\n")
        return NOT_DONE_YET


class _Text(Resource):
    isLeaf = True

    def __init__(self, check):
        Resource.__init__(self)
        self.check = check

    def render_GET(self, request):
        ok, text = self.check()
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return (text + "\n").encode("utf-8")

    render_HEAD = render_GET


def _json(request, data, code=200):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")


class _HandlespaceAPI(Resource):
    isLeaf = True

    def __init__(self, monitor):
        Resource.__init__(self)
        self.monitor = monitor

    def render_GET(self, request):
        pool = _arg(request, "pool")
        query = (_arg(request, "q", b"") or b"").decode("utf-8", "replace")
        offset = _int_arg(request, "offset", 0, 0, 1 << 31)
        limit = _int_arg(request, "limit", 1000, 1, 10000)
        return _json(request, self.monitor.handlespace_json(pool, query, offset, limit))


class _EventsAPI(Resource):
    isLeaf = True

    def __init__(self, monitor):
        Resource.__init__(self)
        self.monitor = monitor

    def render_GET(self, request):
        since = _int_arg(request, "since", 0, 0, 1 << 62)
        ring = self.monitor.events
        return _json(request, {"seq": ring.seq, "events": ring.since(since)})


def pe_json(pe, now, own):
    """
    One PE for C{/api/v1/handlespace} (schema in ``doc/operations.rst``).
    """
    wire = pe.user_transport.wire
    policy = pe.policy
    fields = POLICY_FIELDS[policy.policy_type]
    asap = pe.asap_transport
    expires = None
    if pe.timer_time is not None and pe.home_registrar != own:
        expires = round(pe.timer_time - now, 3)
    return {
        "pool": handle_text(pe.handle),
        "id": _id(pe.pe_id),
        "addresses": [str(a) for a in wire.addresses],
        "port": wire.port,
        "transport": wire.protocol,
        "use": "data plus control" if getattr(wire, "transport_use", 0) == DATA_PLUS_CONTROL
        else "data only",
        "policy": policy.name,
        "policy_values": dict(zip(fields, policy.values)),
        "home": _id(pe.home_registrar),
        "owned": pe.home_registrar == own,
        "registration_life": pe.registration_life / 1000.0,
        "age": round(now - pe.registration_time, 3),
        "updated": round(now - pe.last_update, 3),
        "expires_in": expires,
        "unreachable_reports": pe.unreachable_reports,
        "selections": pe.selection_count,
        "asap": "%s %s:%d" % (asap.protocol, ",".join(str(a) for a in asap.addresses), asap.port)
        if asap is not None and getattr(asap, "addresses", None) else None,
    }


def peer_json(peer, now, enrp, hs):
    """
    One ENRP peer for C{/api/v1/handlespace}.
    """
    from rserpool.enrp.machine import PeerTimer

    if peer.takeover is not None:
        state = "taking over"
    elif peer.takeover_by:
        state = "taken over by %s" % _id(peer.takeover_by)
    elif peer.timer is PeerTimer.NO_RESPONSE:
        state = "not answering"
    elif peer.connections:
        state = "up"
    else:
        state = "no connection"
    information = peer.information
    address = None
    if information is not None:
        t = information.transport
        address = "%s %s:%d" % (t.protocol, ",".join(str(a) for a in t.addresses), t.port)
    return {
        "id": _id(peer.server_id),
        "address": address,
        "state": state,
        "last_heard": round(now - peer.last_heard, 3),
        "connections": len(peer.connections),
        "owned": hs.owned_count(peer.server_id),
        "mentor": enrp.mentor == peer.server_id,
    }


class RegistrarMonitor:
    """
    The counters, the recent events and the HTTP side of one registrar.

    @ivar sent_asap: ASAP messages sent, by type code.
    @ivar sent_enrp: ENRP messages sent, by type code.
    @ivar resolution: the L{Histogram} of handle resolution times.
    @ivar removals: PEs removed, by reason.
    @ivar events: the L{EventRing}.
    @ivar registry: this registrar's prometheus-client registry.
    @ivar http_port: the HTTP listening port, once listening.
    """

    log = Logger()

    def __init__(self, service, clock, limits=None, metrics_cache=1.0, events=256,
                 wall=time.time):
        """
        @param service: the L{rserpool.services.RegistrarService}.
        @param clock: its C{IReactorTime}.
        @param limits: the L{HTTPLimits} of the listener.
        @param metrics_cache: seconds a rendered C{/metrics} is served again.
        @param events: how many recent events are kept.
        @param wall: the wall clock, for event times shown to people.
        """
        self.service = service
        self.clock = clock
        self.wall = wall
        self.limits = limits if limits is not None else HTTPLimits()
        self.sent_asap = collections.Counter()
        self.sent_enrp = collections.Counter()
        self.resolution = Histogram(RESOLUTION_BUCKETS)
        self.removals = collections.Counter()
        self.events = EventRing(events)
        self.registry = registry_for(RegistrarCollector(self))
        self.metrics_cache = metrics_cache
        self.started = None
        self.http_port = None
        self.site = None
        #: the L{rserpool.transport.csp_reporter.CSPReporter}, when reporting
        self.csp = None
        self._watched = None
        self.hub = ChangeHub(clock, self.fingerprint, self.limits)
        self.events.observers.append(self.hub.event)
        registrar = service.registrar
        registrar.on_registered.append(self._registered)
        registrar.on_removed.append(self._removed)

    # -- what the registrar does --------------------------------------------

    def _registered(self, pe, outcome):
        if outcome.created:
            self.events.add(self.wall(), "registration", handle_text(pe.handle), _id(pe.pe_id),
                            None, home=_id(pe.home_registrar))

    def _removed(self, pe, reason):
        self.removals[reason] += 1
        kind = "deregistration" if reason == "deregistered" else "failure"
        self.events.add(self.wall(), kind, handle_text(pe.handle), _id(pe.pe_id),
                        None if kind == "deregistration" else reason,
                        home=_id(pe.home_registrar))

    def _takeover(self, target, owner, moved):
        pools = sorted({handle_text(pe.handle) for pe in moved})
        self.events.add(self.wall(), "takeover", ", ".join(pools[:5]) or None, None,
                        "registrar %s failed; %d PEs now at %s" % (_id(target), len(moved),
                                                                     _id(owner)),
                        target=_id(target), owner=_id(owner), moved=len(moved))

    def asap_receiver(self, registrar, clock, run=None):
        """
        The receiver of the ASAP listeners: counts and times as it feeds
        C{registrar} and carries out its actions with C{run} (an
        L{rserpool.actions.Runner}).
        """
        return MeteredASAPReceiver(registrar, clock, self, run)

    def enrp_receiver(self, server, clock, outgoing=False, run=None):
        """
        The receiver of an ENRP listener or peer connection.
        """
        if self._watched is not server:
            self._watched = server
            server.on_takeover.append(self._takeover)
        return MeteredENRPReceiver(server, clock, self, outgoing, run)

    # -- state ----------------------------------------------------------------

    def uptime(self):
        """
        Seconds since the service started (0 before).
        """
        if self.started is None:
            return 0.0
        return max(0.0, self.clock.seconds() - self.started)

    def listening(self):
        """
        Whether the registrar is up: running, with its ASAP listeners.
        """
        service = self.service
        return bool(service.running and service.asap_ports)

    def ready(self):
        """
        Whether ENRP startup is over (always, without ENRP) and the
        registrar listens.
        """
        enrp = self.service.enrp
        return self.listening() and (enrp is None or enrp.ready)

    def fingerprint(self):
        """
        Something that changes when the handlespace or the peers change:
        PEs, and each owner's PE checksum (RFC 5353 section 3.6.1).
        """
        hs = self.service.registrar.handlespace
        enrp = self.service.enrp
        owners = tuple(sorted((o, hs.owner_checksum(o)) for o in hs.owners()))
        peers = tuple(sorted((p.server_id, p.timer.name, p.takeover is not None)
                             for p in enrp.peers.values())) if enrp is not None else ()
        return (len(hs), owners, peers, self.events.seq)

    def registrar_json(self):
        """
        This registrar for C{/api/v1/handlespace}.
        """
        service = self.service
        registrar = service.registrar
        hs = registrar.handlespace
        enrp = service.enrp
        return {
            "id": _id(registrar.server_id),
            "uptime": round(self.uptime(), 3),
            "ready": self.ready(),
            "enrp": enrp is not None,
            "mentor": _id(enrp.mentor) if enrp is not None and enrp.mentor else None,
            "pools": len(hs.pools()),
            "pool_elements": len(hs),
            "owned": hs.owned_count(registrar.server_id),
            "peers": len(enrp.peers) if enrp is not None else 0,
            "listeners": [_listener(p, "asap") for p in service.asap_ports]
            + [_listener(p, "enrp") for p in service.enrp_ports],
        }

    def peers_json(self):
        enrp = self.service.enrp
        if enrp is None:
            return []
        now = self.clock.seconds()
        hs = self.service.registrar.handlespace
        return [peer_json(p, now, enrp, hs)
                for p in sorted(enrp.peers.values(), key=lambda p: p.server_id)]

    def pools_json(self, pools=None):
        hs = self.service.registrar.handlespace
        own = self.service.registrar.server_id
        out = []
        for pool in sorted(pools if pools is not None else hs.pools(), key=lambda p: p.handle):
            first = next(iter(pool), None)
            out.append({
                "handle": handle_text(pool.handle),
                "handle_hex": bytes(pool.handle).hex(),
                "policy": first.policy.name if first is not None else pool.policy_type.name,
                "transport": first.user_transport.wire.protocol if first is not None else None,
                "use": "data plus control" if pool.control_channel else "data only",
                "pool_elements": len(pool),
                "owned": sum(1 for pe in pool if pe.home_registrar == own),
            })
        return out

    def select(self, pool, query):
        """
        The PEs of C{pool} (a handle, or C{None} for every pool) that match
        C{query}, in order of pool handle and PE identifier.

        @return: C{(pools, matching PEs)}.
        """
        hs = self.service.registrar.handlespace
        if pool is not None:
            found = hs.pool(pool)
            pools = [found] if found is not None else []
        else:
            pools = sorted(hs.pools(), key=lambda p: p.handle)
        elements = []
        for p in pools:
            members = sorted(p, key=lambda pe: pe.pe_id)
            if query:
                members = [pe for pe in members if pe_matches(pe, query)]
            elements.extend(members)
        return pools, elements

    def handlespace_json(self, pool=None, query="", offset=0, limit=1000):
        """
        C{/api/v1/handlespace}: the registrar, its peers, the pools and a
        page of their PEs (schema in ``doc/operations.rst``).
        """
        now = self.clock.seconds()
        own = self.service.registrar.server_id
        pools, elements = self.select(pool, query)
        page = elements[offset:offset + limit]
        return {
            "version": 1,
            "registrar": self.registrar_json(),
            "peers": self.peers_json(),
            "pools": self.pools_json(pools),
            "pool_elements": {
                "pool": handle_text(pool) if pool is not None else None,
                "query": query,
                "total": len(elements),
                "offset": offset,
                "limit": limit,
                "items": [pe_json(pe, now, own) for pe in page],
            },
        }

    # -- HTTP -----------------------------------------------------------------

    def resource(self):
        """
        The root resource of the registrar's HTTP listener.
        """
        root = HandlespacePage(self)
        root.putChild(b"metrics", MetricsResource(self.registry, self.clock, self.metrics_cache))
        root.putChild(b"healthz", _Text(lambda: (self.listening(),
                                                 "ok" if self.listening() else "not listening")))
        root.putChild(b"readyz", _Text(self._readyz))
        root.putChild(b"events", _Events(self))
        api = Resource()
        v1 = Resource()
        api.putChild(b"v1", v1)
        v1.putChild(b"handlespace", _HandlespaceAPI(self))
        v1.putChild(b"events", _EventsAPI(self))
        root.putChild(b"api", api)
        root.putChild(b"static", _Static(STATIC))
        return root

    def _readyz(self):
        if not self.listening():
            return False, "not listening"
        enrp = self.service.enrp
        if enrp is not None and not enrp.ready:
            return False, "ENRP startup: looking for a mentor or downloading its handle table"
        return True, "ready"

    def start(self, description=None):
        """
        The service starts: note the time, and listen for HTTP on
        C{description} if given.

        @return: a L{Deferred} firing with the port (or C{None}).
        """
        self.started = self.clock.seconds()
        if not description:
            return defer.succeed(None)

        def listening(result):
            self.http_port, self.site = result
            return self.http_port

        return listen_http(self.service.reactor, description, self.resource(),
                           self.limits).addCallback(listening)

    def start_csp(self, address, interval):
        """
        Report to RSPLIB's C{cspmonitor} at C{address} (C{(host, port)})
        every C{interval} seconds (L{rserpool.transport.csp_reporter}).
        """
        from rserpool.transport.csp_reporter import CSPReporter, registrar_id, registrar_report

        service = self.service
        self.csp = CSPReporter(service.reactor, address, lambda: registrar_id(service),
                               lambda: registrar_report(service), interval)
        return self.csp.start()

    def stop(self):
        """
        Stop listening and reporting, and end the live streams.

        @return: a L{Deferred}.
        """
        self.hub.stop()
        csp, self.csp = self.csp, None
        if csp is not None:
            csp.stop()
        port, self.http_port = self.http_port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)
