"""
The Twisted side of the pool element and pool user state machines.

L{MachineDriver} runs a sans-IO machine of L{rserpool.asap.pool_element}
or L{rserpool.asap.pool_user}: it opens the connections the machine asks
for (Twisted client endpoint descriptions, so C{tcp:}, C{ssl:} and
C{sctp:} registrars all work) with the ASAP mapping of the endpoint's
transport (L{rserpool.transport.tcp.MessageStreamFactory}), feeds it
messages and the time, and calls its timer.

The public classes built on it are in L{rserpool.pe}
(L{PoolElementService <rserpool.pe.PoolElementService>}) and L{rserpool.pu}
(L{PoolUser <rserpool.pu.PoolUser>}, L{PoolClientEndpoint
<rserpool.pu.PoolClientEndpoint>}).
"""
from twisted.internet import error
from twisted.internet.endpoints import clientFromString
from twisted.logger import Logger
from zope.interface import implementer

from rserpool.asap.hunt import CancelConnect, Connect
from rserpool.asap.pool_element import Close, Send
from rserpool.codes import ASAP_PPID
from rserpool.enrp.trust import endpoint_arguments
from rserpool.interfaces import IMessageReceiver
from rserpool.transport.tcp import MessageStreamFactory
from rserpool.wire import ASAPError

__all__ = ["MachineDriver", "listen_for_registrars", "announced_endpoint",
           "secured_announce", "connect_reason", "peer_endpoint"]



class _AttemptFactory(MessageStreamFactory):
    """
    Builds the ASAP connection of one of the machine's connection
    attempts (L{Connect}), marked with the attempt.
    """

    def __init__(self, driver, attempt):
        MessageStreamFactory.__init__(self, driver, "asap")
        self.attempt = attempt

    def buildProtocol(self, addr):
        protocol = MessageStreamFactory.buildProtocol(self, addr)
        protocol.attempt = self.attempt
        return protocol


def connect_reason(failure):
    """
    Why a connection attempt failed, in a few words for a person
    (C{"connection refused"}, C{"timed out"}, C{"no route to host"}, ...).

    @param failure: the attempt's L{Failure}.
    """
    reason = failure.value
    for cls, text in _CONNECT_REASONS:
        if isinstance(reason, cls):
            return text
    os_error = getattr(reason, "osError", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    inner = getattr(os_error, "getErrorMessage", None)
    text = inner() if inner is not None else failure.getErrorMessage()
    # One line, of a bounded length, whatever the transport put in it.
    text = " ".join(str(text).split())
    return text if len(text) <= 200 else text[:197] + "..."


_CONNECT_REASONS = (
    (error.ConnectionRefusedError, "connection refused"),
    (error.TimeoutError, "timed out"),
    (error.NoRouteError, "no route to host"),
    (error.DNSLookupError, "cannot resolve the host name"),
)


def peer_endpoint(connection):
    """
    A client endpoint description of the far end of a connection a
    registrar opened to us, for the events that name it.

    @return: e.g. C{"sctp:host=192.0.2.1,198.51.100.1:port=3863:ppid=11"}
        (every address of an SCTP peer), C{"tcp:host=192.0.2.1:port=3863"},
        or C{None} when the peer's address is unknown.
    """
    from rserpool.asap.pool_user import endpoint_description, quote_endpoint

    host, port = getattr(connection, "peer", (None, 0))
    if host is None:
        return None
    if getattr(connection, "mapping", None) == "sctp":
        transport = getattr(connection, "peer_transport", None)
        addresses = transport.addresses if transport is not None else (host,)
        return "sctp:host=%s:port=%d:ppid=%d" % (
            ",".join(quote_endpoint(str(a)) for a in addresses), port, ASAP_PPID)
    return endpoint_description("tcp", host, port)


def _registrar_protocols(driver):
    """
    The mappings a machine reaches its registrars by, in order of
    preference: those of its static registrars (C{tcp:...}, C{sctp:...}),
    or, with none, TCP and then SCTP.
    """
    out = []
    for description in getattr(driver.machine, "static", ()) or ():
        kind = str(description).split(":", 1)[0].strip().lower()
        if kind in ("tcp", "tcp6"):
            kind = "tcp"
        if kind in ("tcp", "sctp") and kind not in out:
            out.append(kind)
    return tuple(out) or ("tcp", "sctp")


def announced_endpoint(entry, protocols=("tcp",)):
    """
    The client endpoint description to reach an announced registrar by,
    or C{None} when it offers none of C{protocols}.

    @param entry: a L{KnownRegistrar
        <rserpool.asap.announce.KnownRegistrar>}.
    @param protocols: the acceptable mappings in order of preference
        (C{"tcp"}, C{"sctp"}).
    @return: e.g. C{"tcp:host=192.0.2.1:port=3863"} or, for SCTP, every
        address of the transport (multi-homing) and ASAP's PPID:
        C{"sctp:host=192.0.2.1,198.51.100.1:port=3863:ppid=11"}.
    """
    from rserpool.asap.pool_user import endpoint_description, quote_endpoint

    for protocol in protocols:
        for t in entry.transports:
            if t.protocol != protocol or not t.addresses:
                continue
            if protocol == "sctp":
                return "sctp:host=%s:port=%d:ppid=%d" % (
                    ",".join(quote_endpoint(str(a)) for a in t.addresses), t.port, ASAP_PPID)
            return endpoint_description(protocol, t.addresses[0], t.port)
    return None


def secured_announce(static):
    """
    How to reach a registrar learned from a Server Announce when the static
    registrars are secured: an announcement is not authenticated (RFC 5355
    section 2.12, a spoofed discovery), so it must not lead to a registrar
    that is not.

    @param static: the static registrars' client endpoint strings.
    @return: C{None} when none of them is secured (announced registrars
        are reached as announced); else a function from an announced
        endpoint string to the one to dial, or to C{None} to ignore it.
        With a C{psk:} registrar, announced TCP registrars are reached over
        TLS-PSK with its key file and identity (a spoofed registrar then
        fails the handshake); SCTP ones and, with only certificate-secured
        registrars (C{ssl:}, C{tls:}), all of them are ignored.
    """
    from rserpool.transport.psk import PSKEndpoints, is_secure

    secured = [d for d in static if is_secure(str(d))]
    if not secured:
        return None
    for description in secured:
        prefix, _, options = endpoint_arguments(str(description))
        if prefix.strip().lower() == "psk" and "keys" in options:
            psk = PSKEndpoints(options["keys"], options.get("identity"))

            def secure(endpoint):
                try:
                    return psk.client(endpoint)
                except ValueError:
                    return None

            return secure
    return lambda endpoint: None


def listen_for_registrars(reactor, group, driver, protocols=None, interface=""):
    """
    Learn registrars from ASAP Server Announce (RFC 5352 section 3.6) and
    hand them to a PE or PU machine as hunting candidates.

    @param reactor: an C{IReactorMulticast}.
    @param group: C{(multicast group, port)}, e.g. C{("239.0.0.50", 3863)}.
    @param driver: the L{MachineDriver} of a machine with
        C{registrar_announced(server_id, endpoint, now)}.
    @param protocols: the mappings to accept from an announcement, in order
        of preference (C{"tcp"}, C{"sctp"}); by default those of the
        machine's static registrars, or TCP and then SCTP when it has none.
        With secured static registrars, announced ones are reached only as
        L{secured_announce} says.
        An announcement without a transport (RSPLIB's) means SCTP at its
        source address and port.
    @param interface: the address of the interface to join the group on
        (the system's choice by default).
    @return: the listening port (stop it with C{stopListening}).
    """
    from rserpool.transport.multicast import AnnounceListener

    host, number = group
    secure = secured_announce(getattr(driver.machine, "static", ()) or ())
    if protocols is None:
        protocols = ("tcp",) if secure is not None else _registrar_protocols(driver)

    def learned(entry):
        endpoint = announced_endpoint(entry, protocols)
        if endpoint is not None and secure is not None:
            endpoint = secure(endpoint)
        if endpoint is not None:
            driver.machine.registrar_announced(entry.server_id, endpoint, driver.now())
            driver.flush()

    def forgotten(server_id):
        driver.machine.registrar_forgotten(server_id)
        driver.flush()

    listener = AnnounceListener(reactor, host, interface=interface, on_announce=learned,
                                on_forget=forgotten)
    return reactor.listenMulticast(number, listener, listenMultiple=True)


@implementer(IMessageReceiver)
class MachineDriver:
    """
    Moves a sans-IO ASAP machine's actions to Twisted and back.

    @ivar machine: the machine (it has C{actions()}, C{next_deadline},
        C{timer(now)}, C{connected}, C{connect_failed}, C{connection_lost},
        C{message_received}).
    @ivar on_event: called with every action that is not a transport action
        (the machine's events).
    """

    log = Logger()

    def __init__(self, reactor, machine, on_event):
        self.reactor = reactor
        self.machine = machine
        self.on_event = on_event
        self._attempts = {}
        self._call = None
        self._flushing = False
        self._stopped = False
        self.connections = set()

    def now(self):
        return self.reactor.seconds()

    def flush(self):
        """
        Carry out what the machine asked for, then re-arm its timer.
        """
        if self._flushing or self._stopped:
            return
        self._flushing = True
        try:
            while True:
                actions = self.machine.actions()
                if not actions:
                    break
                for action in actions:
                    self._do(action)
        finally:
            self._flushing = False
        self._arm()

    def _do(self, action):
        if isinstance(action, Send):
            action.connection.send(action.message)
        elif isinstance(action, Close):
            action.connection.close()
        elif isinstance(action, Connect):
            self._connect(action)
        elif isinstance(action, CancelConnect):
            d = self._attempts.pop(action.attempt, None)
            if d is not None:
                d.cancel()
        else:
            self.on_event(action)

    def _connect(self, action):
        attempt = action.attempt
        try:
            endpoint = self.endpoint(action.endpoint)
        except Exception as e:  # a bad description is the user's, say so
            self.reactor.callLater(0, self._failed, attempt,
                                   "bad endpoint description: %s" % (e,))
            return
        d = endpoint.connect(_AttemptFactory(self, attempt))
        self._attempts[attempt] = d

        def up(p):
            self._attempts.pop(attempt, None)
            return None

        def down(f):
            self._attempts.pop(attempt, None)
            self._failed(attempt, connect_reason(f))

        d.addCallbacks(up, down)

    def endpoint(self, description):
        """
        The client endpoint to reach a registrar by.

        @param description: a client endpoint description (a L{Connect}'s).
        @raise ValueError: for a bad description.
        """
        return clientFromString(self.reactor, description)

    def _failed(self, attempt, reason):
        self.machine.connect_failed(attempt, self.now(), reason)
        self.flush()

    def _arm(self):
        deadline = self.machine.next_deadline
        call = self._call
        if deadline is None:
            if call is not None and call.active():
                call.cancel()
            self._call = None
            return
        delay = max(0.0, deadline - self.now())
        if call is not None and call.active():
            if abs(call.getTime() - deadline) < 1e-9:
                return
            call.cancel()
        self._call = self.reactor.callLater(delay, self._fire)

    def _fire(self):
        self._call = None
        self.machine.timer(self.now())
        self.flush()

    def stop(self):
        """
        Cancel the timer and pending connection attempts; from now on the
        machine's actions are ignored.
        """
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for d in list(self._attempts.values()):
            d.cancel()
        self._attempts.clear()

    # -- IMessageReceiver -------------------------------------------------

    def connection_made(self, connection):
        self.connections.add(connection)
        attempt = getattr(connection, "attempt", None)
        if attempt is None:
            incoming = getattr(self.machine, "incoming_connection", None)
            if incoming is not None:
                local = getattr(connection, "local_addresses", None) or connection.local[0]
                incoming(connection, local, self.now(), peer_endpoint(connection))
            return
        local = getattr(connection, "local_addresses", None) or connection.local[0]
        if not self.machine.connected(attempt, connection, local, self.now()):
            connection.close()
        self.flush()

    def message_received(self, connection, message):
        if isinstance(message, ASAPError):
            self.log.warn("ASAP Error from registrar {peer}: {causes}",
                          peer=connection.peer,
                          causes=message.error.summary())
        self.machine.message_received(connection, message, self.now())
        self.flush()

    def protocol_error(self, connection, error):
        self.log.warn("undecodable message from registrar {peer}: {reason}",
                      peer=connection.peer, reason=error.reason)

    def connection_lost(self, connection):
        self.connections.discard(connection)
        self.machine.connection_lost(connection, self.now())
        self.flush()

