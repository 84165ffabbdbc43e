"""
Pool elements as Twisted services.

L{PoolElementService} wraps the application's own server (a server
endpoint description and a factory, or a port already listening) and
keeps it registered in a pool for as long as the service runs: the ASAP
procedures are L{rserpool.asap.pool_element.PoolElementMachine}; this
module only listens, connects and keeps time.

Basic Mode (draft-ietf-rserpool-service section 3.2): the application's
port is registered as it is (any transport: TCP, UDP, SCTP) and pool
users talk to it directly.  Enhanced Mode (section 3.3): pass
C{enhanced=True}; the factory is wrapped in the session layer
(L{rserpool.transport.enhanced.PESessionFactory}) and the port is registered with
transport use "data plus control".

Addresses: by default the application serves on the wildcard address
(L{DEFAULT_ENDPOINT}) and the PE registers the addresses it reaches its
registrar from (L{rserpool.asap.pool_element.effective_transport}): the
local address of the registrar connection over TCP, every local address of
the association over SCTP, loopback only to a registrar on loopback.  So a
PE works with a registrar on another host without address options, and
the registrar's check that a PE registers only its own addresses (RFC 5355
section 2.1) passes.

Registrars over SCTP: the PE's associations to them leave from a
one-to-many SCTP socket of its own (its ASAP port, bound like the
registrar description's C{bindAddress}, all addresses by default), which
accepts associations too.  A registrar knows a PE's ASAP transport as the
far end of the association it registered over, so a registrar that takes
the PE over (RFC 5353) reaches it there with an Endpoint Keep Alive with
the H flag, and the PE makes it its home (RFC 5352 section 3.4).  Over TCP
a PE only connects out (no registrar can reach it): when its home fails,
it hunts.

    >>> from rserpool.pe import PoolElementService
    >>> pe = PoolElementService(b"EchoPool", EchoFactory(),
    ...                         registrars=["tcp:192.0.2.1:3863"])
    >>> pe.setServiceParent(application)
    >>> pe.registered.addCallback(lambda pe: print("registered", pe))
"""
import random
import socket

import attrs

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from rserpool.asap.pool_element import (
    Deregistered,
    HomeChanged,
    IdentifierChanged,
    PoolElementConfig,
    PoolElementMachine,
    RegistrarProblem,
    Registered,
    RegistrationFailed,
    REGISTERED,
    new_identifier,
)
from rserpool.asap.scope import Scope, address_scope
from rserpool.driver import MachineDriver, listen_for_registrars
from rserpool.codes import (
    ASAP_PPID,
    DEFAULT_REGISTRAR,
    POLICY_FIELDS,
    POLICY_NAMES,
    ErrorCause,
    PolicyType,
)
from rserpool.interfaces import normalize_address
from rserpool.web.nodes import NodeHTTP, PoolElementCollector, PoolElementMonitor
from rserpool.wire import (
    DATA_ONLY,
    DATA_PLUS_CONTROL,
    Policy,
    SCTPTransport,
    TCPTransport,
    UDPTransport,
)

__all__ = ["PoolElementService", "RegistrationRejected", "parse_policy", "load_value",
           "DEFAULT_ENDPOINT", "rejection_advice"]

_TRANSPORTS = {"tcp": TCPTransport, "udp": UDPTransport, "sctp": SCTPTransport}

#: Where a PE's application listens unless told otherwise: TCP, any port,
#: the wildcard address (what it registers comes from its registrar
#: connection; see the module's description).
DEFAULT_ENDPOINT = "tcp:0"


class RegistrationRejected(Exception):
    """
    A registrar rejected the registration.  C{str()} is one line naming the
    cause (RFC 5354's, or RSPLIB's own), what was registered, and what to
    do about it.

    @ivar cause: the cause code (L{rserpool.codes.ErrorCause}, or one of
        L{rserpool.codes.RSPLIB_CAUSES}).
    @ivar cause_name: its name, e.g. C{"INCONSISTENT_POOLING_POLICY"}.
    @ivar causes: every L{rserpool.wire.Cause} of the Operation Error.
    @ivar registrar: the registrar's endpoint description, or C{None}.
    @ivar advice: what to do about it (L{rejection_advice}), or C{""}.
    """

    def __init__(self, pool_handle, event):
        Exception.__init__(self, pool_handle, event.cause)
        self.pool_handle = pool_handle
        self.cause = event.cause
        self.cause_name = event.cause_name
        self.causes = event.causes
        self.registrar = event.endpoint
        self.advice = rejection_advice(event)

    def __str__(self):
        text = "registration in pool %r rejected%s: %s (cause 0x%04x)" % (
            self.pool_handle.decode("utf-8", "replace"),
            " by %s" % self.registrar if self.registrar else "", self.cause_name, self.cause)
        if self.advice:
            text += "; " + self.advice
        return text


def _texts(addresses):
    return ", ".join(str(a) for a in addresses) or "no address"


def rejection_advice(event):
    """
    What to do about a rejected registration, in a few words for a person.

    @param event: a L{RegistrationFailed}.
    @return: a C{str}, empty when there is nothing useful to say.
    """
    pe = event.pool_element
    registered = tuple(pe.user_transport.addresses) if pe is not None else ()
    local = tuple(event.local)
    remote_registrar = bool(local) and not local[0].is_loopback
    bind = "serve on the wildcard address (the default) or bind to %s (rserpool pe --bind)" % (
        _texts(local[:1]) if local else "an address of the interface that reaches the registrar")
    cause = event.cause
    if remote_registrar and any(a.is_loopback for a in registered):
        return ("this PE registered %s, a loopback address, with a registrar it reaches from %s; "
                "pool users elsewhere cannot use it: %s" % (_texts(registered), _texts(local), bind))
    if cause == ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS:
        return ("a registrar accepts only addresses of the PE's own connection (RFC 5355); this PE "
                "registered %s and reaches the registrar from %s: %s; over TLS-PSK the PE "
                "identifier may also belong to another identity" % (
                    _texts(registered), _texts(local) if local else "an unknown address", bind))
    narrow = [a for a in registered if address_scope(a) < Scope.SITE_LOCAL]
    if cause in (ErrorCause.INVALID_VALUES, 0x0011, 0xF005, 0xF008) and narrow:
        if local and local[0].is_loopback and any(a.is_loopback for a in narrow):
            return ("this PE reaches the registrar over loopback, so it registered %s, and the "
                    "registrar accepts addresses from a minimum scope up (site-local and wider "
                    "when it listens on every address): give the registrar's network address "
                    "(--registrar tcp:ADDRESS:3863), or lower its minimum scope (twistd enrp "
                    "--min-address-scope loopback)" % _texts(narrow))
        return ("the registrar accepts addresses from a minimum scope up (site-local and wider by "
                "default); this PE registered %s: bind to a site-local or global address, or lower "
                "the registrar's minimum scope (twistd enrp --min-address-scope, RSPLIB "
                "-minaddressscope)" % _texts(narrow))
    return _ADVICE.get(cause, "")


_ADVICE = {
    ErrorCause.INCONSISTENT_POOLING_POLICY:
        "the pool's PEs use another policy; register with the pool's policy (--policy)",
    ErrorCause.INCONSISTENT_TRANSPORT_TYPE:
        "the pool's PEs serve over another transport (TCP, SCTP, UDP); serve as they do",
    ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION:
        "the pool's PEs use the other session mode; use the pool's (--mode basic or enhanced)",
    ErrorCause.NON_UNIQUE_PE_IDENTIFIER:
        "another PE holds this PE identifier; choose another (or none: --identifier)",
    ErrorCause.LACK_OF_RESOURCES:
        "the registrar holds as many PEs as it may (twistd enrp --max-pool-elements)",
    ErrorCause.INVALID_VALUES:
        "the registrar found a value of the registration invalid (pool handle, PE identifier, "
        "policy or addresses)",
    0x0010: "RSPLIB found the message malformed",
    0x0011: "RSPLIB found a value of the registration invalid (pool handle, policy or addresses)",
}


def load_value(load):
    """
    A load as the 32-bit wire value: a C{float} between 0 and 1 is a
    fraction, an C{int} is taken as it is.
    """
    if isinstance(load, float):
        if not 0.0 <= load <= 1.0:
            raise ValueError("a load fraction is between 0.0 and 1.0, not %r" % (load,))
        return int(round(load * 0xFFFFFFFF))
    if not 0 <= load <= 0xFFFFFFFF:
        raise ValueError("a load is a 32-bit value, not %r" % (load,))
    return load


def parse_policy(text):
    """
    Parse C{NAME[:VALUE...]}, e.g. C{RoundRobin}, C{WeightedRandom:5},
    C{LeastUsed:0.25}, C{PriorityLeastUsed:0.5:0.01}: RSPLIB's policy name
    (L{rserpool.codes.POLICY_NAMES}, case-insensitive) followed by its
    fields in wire order; loads and degradations may be fractions.

    @raise ValueError: one line naming the problem.
    """
    parts = text.split(":")
    name = parts[0].strip().lower()
    for ptype, pname in POLICY_NAMES.items():
        if pname.lower() == name or PolicyType(ptype).name.lower() == name.replace("-", "_"):
            break
    else:
        raise ValueError("unknown policy %r (known: %s)" % (parts[0], ", ".join(POLICY_NAMES.values())))
    fields = POLICY_FIELDS[ptype]
    values = parts[1:]
    if len(values) > len(fields):
        raise ValueError("policy %s takes %d value(s): %s" % (pname, len(fields), ", ".join(fields) or "none"))
    kwargs = {}
    for field, raw in zip(fields, values):
        raw = raw.strip()
        if field in ("load", "load_degradation", "load_dpf", "weight_dpf") and "." in raw:
            kwargs[field] = load_value(float(raw))
        else:
            kwargs[field] = int(raw, 0)
    if "weight" in fields and "weight" not in kwargs:
        kwargs["weight"] = 1
    return Policy.make(ptype, **kwargs)


def _dual_stack(port):
    """
    Whether a port listens on the IPv6 wildcard for IPv4 as well.
    """
    skt = getattr(port, "socket", None)
    if skt is None or getattr(skt, "family", None) != socket.AF_INET6:
        return False
    try:
        return skt.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    except OSError:
        return False


def _transport_of(address, protocol, use, dual_stack=False):
    host = getattr(address, "host", None)
    if host is None:
        raise ValueError("cannot register a port without an IP address: %r" % (address,))
    kind = protocol or getattr(address, "type", "TCP").lower()
    cls = _TRANSPORTS.get(kind)
    if cls is None:
        raise ValueError("cannot register a %s port" % kind)
    ip = normalize_address(host)
    if ip.is_unspecified:
        # The wildcard stays a wildcard here: each registrar connection
        # says which addresses stand for it (effective_transport), not the
        # kernel's list of every address of the host (loopback included).
        ips = (ip, normalize_address("0.0.0.0")) if dual_stack and ip.version == 6 else (ip,)
        if cls is UDPTransport:
            return UDPTransport(address.port, ips)
        return cls(address.port, ips, use)
    if cls is UDPTransport:
        return UDPTransport(address.port, (ip,))
    if cls is SCTPTransport:
        # A multi-homed SCTP port registers every address it is bound to
        # (RFC 5354 section 3.2: one or more addresses), primary first.
        ips = [ip]
        for text in getattr(address, "addresses", ()) or ():
            other = normalize_address(text)
            if other not in ips:
                ips.append(other)
        return SCTPTransport(address.port, tuple(ips), use)
    return cls(address.port, (ip,), use)


class _PEDriver(MachineDriver):
    """
    A pool element's L{MachineDriver}: it reaches SCTP registrars from the
    PE's ASAP port (L{PoolElementService.asap_port}), so the associations
    leave from a port that accepts a registrar's own.
    """

    def __init__(self, reactor, machine, on_event, asap_port):
        MachineDriver.__init__(self, reactor, machine, on_event)
        self._asap_port = asap_port

    def endpoint(self, description):
        from rserpool.transport.sctp import SCTPAssociationEndpoint, SCTPClientEndpoint

        endpoint = MachineDriver.endpoint(self, description)
        if isinstance(endpoint, SCTPClientEndpoint):
            port = self._asap_port(endpoint.bindAddresses, endpoint.hosts)
            if port is not None:
                return SCTPAssociationEndpoint(port, endpoint.hosts, endpoint.port,
                                               endpoint.timeout)
        return endpoint


class PoolElementService(service.Service):
    """
    A pool element: the application's server, kept registered in a pool
    (RFC 5352 section 3).

    @ivar registered: a L{Deferred} that fires with this service when a
        registrar first accepts the registration, or fails with
        L{RegistrationRejected} (the RFC cause inside).
    @ivar machine: the L{PoolElementMachine}.
    @ivar port: the application's listening port, once started.
    @ivar home_registrar: the home registrar's id, 0 while unknown.
    @ivar asap_ports: the PE's one-to-many SCTP sockets its associations
        to SCTP registrars leave from, which accept registrars' own (RFC
        5353 takeover), by the addresses they are bound to (C{()} for all);
        opened when first needed.
    """

    log = Logger()

    def __init__(self, pool_handle, factory=None, endpoint=DEFAULT_ENDPOINT,
                 registrars=(DEFAULT_REGISTRAR,), policy=None, reactor=None, rng=None,
                 identifier=None, reregistration_interval=30.0, registration_life=None,
                 response_timeout=3.0, connect_timeout=7.5, hunt_retry_delay=1.0,
                 enhanced=False, port=None, protocol=None, announce=None,
                 session_options=None, http=None, csp=None, csp_interval=0.25):
        """
        @param pool_handle: the pool handle (C{bytes}, or C{str} in UTF-8).
        @param factory: the application's server factory (not needed with
            C{port}).
        @param endpoint: a server endpoint description the factory listens
            on (C{tcp:0}, the wildcard address and any port, by default;
            C{sctp:0}, C{psk:...}, C{tcp:7:interface=192.0.2.5}).  On the
            wildcard address the PE registers the addresses it reaches its
            registrar from.
        @param registrars: client endpoint descriptions of registrars, in
            order of preference (RFC 5352 section 3.6, static list).
        @param policy: a L{Policy} or a C{"NAME[:VALUE...]"} string
            (L{parse_policy}); round robin by default.
        @param reactor: the reactor (the global one by default).
        @param rng: a C{random.Random} (for the PE identifier).
        @param identifier: a fixed PE identifier instead of a random one
            (then kept: a refusal as Non-unique PE Identifier is final;
            a random one is replaced by a fresh one and registered again).
        @param reregistration_interval: seconds between re-registrations.
        @param registration_life: seconds; three intervals by default.
        @param response_timeout: seconds to wait for a registrar's answer.
        @param connect_timeout: seconds to wait for a registrar connection.
        @param hunt_retry_delay: seconds between rounds of the registrar
            hunt.
        @param enhanced: run the factory under the Enhanced Mode session
            layer (L{rserpool.session}).
        @param port: an already listening port (e.g. from C{listenUDP}) to
            register instead of listening on C{endpoint}.
        @param protocol: C{"tcp"}, C{"udp"} or C{"sctp"} when the port's
            address does not tell.
        @param announce: C{(group_host, port)} to learn registrars from
            Server Announce, or C{None}.
        @param session_options: keyword arguments for
            L{rserpool.transport.enhanced.PESessionFactory} (heartbeat settings).
        @param http: a server endpoint string to serve this PE's metrics
            on (C{/metrics}, C{/healthz}: L{rserpool.web.nodes}), or
            C{None}.
        @param csp: C{(host, port)} of RSPLIB's C{cspmonitor} to report
            this PE's status to (L{rserpool.transport.csp_reporter}), or C{None}.
        @param csp_interval: seconds between those reports.
        """
        if reactor is None:
            from twisted.internet import reactor
        if isinstance(pool_handle, str):
            pool_handle = pool_handle.encode("utf-8")
        if policy is None:
            policy = Policy.make(PolicyType.ROUND_ROBIN)
        elif isinstance(policy, str):
            policy = parse_policy(policy)
        self.reactor = reactor
        self.rng = rng if rng is not None else random.SystemRandom()
        self.pool_handle = pool_handle
        self.factory = factory
        self.endpoint = endpoint
        self.registrars = list(registrars)
        self.enhanced = enhanced
        self.port = port
        self._own_port = port is None
        self.protocol = protocol
        self.announce = announce
        self.session_options = dict(session_options or {})
        self.config = PoolElementConfig(
            pool_handle, policy, identifier, reregistration_interval, registration_life,
            response_timeout, connect_timeout, hunt_retry_delay,
            identifier_fixed=identifier is not None,
        )
        if self.config.identifier is None:
            self.config = attrs.evolve(self.config, identifier=new_identifier(self.rng))
        self.machine = None
        self.driver = None
        self.registered = defer.Deferred()
        self._first = True
        self._stopping = None
        self._waiters = []
        self._announce_port = None
        self.home_registrar = 0
        self._told = set()
        self.http = http
        #: failovers and registrar problems, for metrics
        self.monitor = PoolElementMonitor(reactor)
        self._http = None
        self.csp = csp
        self.csp_interval = csp_interval
        self._csp = None
        self._home_since = None
        self.asap_ports = {}
        self._asap_failed = set()

    @property
    def identifier(self):
        """
        The PE identifier.
        """
        return self.config.identifier

    @property
    def policy(self):
        """
        The current L{Policy}.
        """
        return self.machine.config.policy if self.machine else self.config.policy

    def __repr__(self):
        return "<PoolElementService %08x in %r>" % (self.identifier, self.pool_handle)

    def startService(self):
        service.Service.startService(self)
        d = self._start_http()
        d.addCallback(lambda _: self.port if self.port is not None else self._listen())
        d.addCallback(self._listening)
        d.addErrback(self._start_failed)
        return d

    def _start_http(self):
        if not self.http:
            return defer.succeed(None)
        self._http = NodeHTTP(self.reactor, [PoolElementCollector(self)],
                              healthy=lambda: self.is_registered)
        return self._http.listen(self.http)

    def _listen(self):
        factory = self.factory
        if self.enhanced:
            from rserpool.transport.enhanced import PESessionFactory

            factory = PESessionFactory(factory, self.reactor, **self.session_options)
            self.session_factory = factory
        endpoint = serverFromString(self.reactor, self.endpoint)
        return endpoint.listen(factory)

    def _listening(self, port):
        self.port = port
        if not self.running:
            return
        use = DATA_PLUS_CONTROL if self.enhanced else DATA_ONLY
        # A port given as it is (port=) tells its own protocol (its
        # address's type: UDP, TCP, SCTP); the unused endpoint does not.
        protocol = self.protocol or (_protocol_of(self.endpoint) if self._own_port else None)
        transport = _transport_of(port.getHost(), protocol, use, _dual_stack(port))
        self.machine = PoolElementMachine(self.config, transport, self.registrars, rng=self.rng)
        self.driver = _PEDriver(self.reactor, self.machine, self._event, self.asap_port)
        self.log.info(
            "pool element {pe_id:08x} of {handle!r} serving on {port}; hunting among {registrars}",
            pe_id=self.identifier, handle=self.pool_handle, port=port.getHost(),
            registrars=self.machine.candidates())
        if self.announce is not None:
            self._start_announce()
        if self.csp is not None:
            from rserpool.transport.csp_reporter import CSPReporter, pool_element_id, pool_element_report

            self._csp = CSPReporter(
                self.reactor, self.csp, lambda: pool_element_id(self),
                lambda: pool_element_report(self, self._registered_for), self.csp_interval)
            self._csp.start()
        self.machine.start(self.reactor.seconds())
        self.driver.flush()

    def asap_port(self, interfaces=(), hosts=()):
        """
        The one-to-many SCTP socket the PE reaches SCTP registrars from
        and accepts their associations on (RFC 5353 takeover: a registrar
        that took the PE over reaches it at its ASAP transport, which a
        registrar takes from the association the PE registered over).
        Opened on first use, any port.

        @param interfaces: the local addresses to bind (a registrar
            description's C{bindAddress}); all of them by default.
        @param hosts: the registrar's addresses: with an IPv6 one and no
            C{interfaces}, the socket is an IPv6 one (for IPv4 too).
        @return: an L{SCTPSeqPacketPort
            <rserpool.transport.sctp.SCTPSeqPacketPort>}, or C{None} when
            none can be opened (the PE then reaches the registrar by a
            one-to-one association, and a registrar that takes it over
            cannot reach it; logged once).
        """
        from twisted.internet import abstract
        from twisted.internet.error import CannotListenError

        from rserpool.transport.sctp import SEQPACKET, SCTPUnavailable, listenSCTP
        from rserpool.transport.tcp import MessageStreamFactory

        interfaces = tuple(interfaces)
        if not interfaces and any(abstract.isIPv6Address(h) for h in hosts):
            interfaces = ("::",)
        port = self.asap_ports.get(interfaces)
        if port is not None or interfaces in self._asap_failed or self.driver is None:
            return port
        try:
            port = listenSCTP(self.reactor, 0, MessageStreamFactory(self.driver, "asap"),
                              interfaces, mode=SEQPACKET, defaultPPID=ASAP_PPID)
        except (SCTPUnavailable, CannotListenError, OSError, ValueError) as e:
            self._asap_failed.add(interfaces)
            self.log.warn(
                "pool element {pe_id:08x}: no SCTP ASAP port on {where} ({reason}); reaching SCTP "
                "registrars by associations of their own, which a registrar that takes this PE "
                "over cannot reach", pe_id=self.identifier, reason=e,
                where=",".join(interfaces) or "all addresses")
            return None
        self.asap_ports[interfaces] = port
        self.log.info("pool element {pe_id:08x}: ASAP over SCTP on port {port}",
                      pe_id=self.identifier, port=port.getHost().port)
        return port

    def _start_announce(self):
        self._announce_port = listen_for_registrars(self.reactor, self.announce, self.driver)

    def _start_failed(self, failure):
        self.log.failure("pool element {handle!r} could not start", failure,
                         handle=self.pool_handle)
        if not self.registered.called:
            self.registered.errback(failure)

    def _event(self, event):
        if isinstance(event, RegistrarProblem):
            self.monitor.problem(event.what.replace(" ", "_"))
            self._problem(event)
        elif isinstance(event, IdentifierChanged):
            # RFC 5355 section 2.3: someone holds our identifier (a PE
            # squatting on it after a registrar restart, or a collision).
            self.config = attrs.evolve(self.config, identifier=event.new)
            self.log.warn(
                "PE identifier {old:08x} is in use by another PE in {handle!r} (Non-unique PE "
                "Identifier); registering as {new:08x}", old=event.old, new=event.new,
                handle=self.pool_handle, pe_id=event.new)
        elif isinstance(event, Registered):
            self.monitor.home()
            self._home_since = self.reactor.seconds()
            self._told.clear()
            self.log.info(
                "pool element {pe_id:08x} {what} in {handle!r} at {registrar}",
                pe_id=self.identifier, handle=self.pool_handle, registrar=event.endpoint,
                what="re-registered" if event.reregistration else "registered",
                pool=self.pool_handle.decode("utf-8", "backslashreplace"),
                pe="%08x" % self.identifier)
            if not self.registered.called:
                self.registered.callback(self)
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(self)
        elif isinstance(event, RegistrationFailed):
            error = RegistrationRejected(self.pool_handle, event)
            self.log.error("{error}", error=str(error))
            if not self.registered.called:
                self.registered.errback(error)
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.errback(error)
        elif isinstance(event, HomeChanged):
            self.monitor.home()
            self.home_registrar = event.server_id
            self.log.info("pool element {pe_id:08x}: home registrar is {id:08x}",
                          pe_id=self.identifier, id=event.server_id)
        elif isinstance(event, Deregistered):
            self.log.info("pool element {pe_id:08x} deregistered from {handle!r}{how}",
                          pe_id=self.identifier, handle=self.pool_handle,
                          how="" if event.confirmed else " (unconfirmed)")
            if self._stopping is not None and not self._stopping.called:
                self._stopping.callback(event.confirmed)

    def _problem(self, event):
        # Every attempt of the hunt reports; a person is told each problem
        # once (until the next registration), so a registrar that stays
        # away costs one line, not one per retry.
        key = (event.endpoint, event.what, event.reason)
        if key in self._told or len(self._told) >= 64:
            return
        self._told.add(key)
        if event.what == "lost":
            text = "lost the connection to registrar {registrar}; hunting for a registrar"
        else:
            text = "cannot register at {registrar}: {reason}; trying {others}"
        others = [c for c in self.machine.candidates() if c != event.endpoint]
        self.log.warn(
            text, registrar=event.endpoint, problem=event.what,
            reason=event.reason or event.what, pe_id=self.identifier, handle=self.pool_handle,
            pool=self.pool_handle.decode("utf-8", "backslashreplace"), pe="%08x" % self.identifier,
            cause=event.what,
            others="the other registrars" if others else "again every %g s" % (
                self.config.hunt_retry_delay,))

    def _registered_for(self):
        if self._home_since is None:
            return None
        return self.reactor.seconds() - self._home_since

    def when_registered(self):
        """
        A L{Deferred} that fires with this service once it is registered
        (at once if it is), or fails with L{RegistrationRejected}.
        """
        if self.machine is not None and self.machine.state == REGISTERED:
            return defer.succeed(self)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    @property
    def is_registered(self):
        """
        Whether a registrar currently holds this PE's registration.
        """
        return self.machine is not None and self.machine.state == REGISTERED

    def set_load(self, load):
        """
        Change the PE's load (adaptive policies, RFC 5356): re-registers at
        once.

        @param load: a fraction (C{float} 0..1) or the 32-bit wire value.
        """
        policy = self.policy
        if "load" not in policy.fields:
            raise ValueError("policy %s has no load" % policy.name)
        fields = dict(policy.fields)
        fields["load"] = load_value(load)
        self.set_policy(Policy.make(policy.policy_type, **fields))

    def set_policy(self, policy):
        """
        Register with another policy value (same type) from now on.
        """
        if self.machine is None:
            self.config = _with_policy(self.config, policy)
            return
        self.machine.set_policy(policy, self.reactor.seconds())
        self.driver.flush()

    def stopService(self):
        """
        Deregister (RFC 5352 section 3.3), then stop listening.

        @return: a L{Deferred} that fires when both are done.
        """
        service.Service.stopService(self)
        if not self.registered.called:
            self.registered.addErrback(lambda f: None)
        if self.machine is None:
            return self._stop_listening(None)
        self._stopping = defer.Deferred()
        self.machine.stop(self.reactor.seconds())
        self.driver.flush()
        d = self._stopping
        d.addCallback(self._stop_listening)
        return d

    def _stop_listening(self, result):
        if self.driver is not None:
            self.driver.stop()
        stops = []
        if self._announce_port is not None:
            stops.append(defer.maybeDeferred(self._announce_port.stopListening))
            self._announce_port = None
        if self.port is not None and self._own_port:
            stops.append(defer.maybeDeferred(self.port.stopListening))
        for port in self.asap_ports.values():
            stops.append(defer.maybeDeferred(port.stopListening))
        self.asap_ports = {}
        if self._http is not None:
            stops.append(self._http.stop())
        if self._csp is not None:
            stops.append(self._csp.stop())
            self._csp = None
        return defer.gatherResults(stops).addCallback(lambda _: result)


def _with_policy(config, policy):
    return attrs.evolve(config, policy=policy)


def _protocol_of(description):
    head = description.split(":", 1)[0].lower()
    if head in ("tcp", "tcp6", "ssl", "tls", "psk", "unix"):
        return "tcp" if head != "unix" else None
    if head in ("sctp", "udp"):
        return head
    return None
