"""
An in-memory network of registrars under one clock, for tests and
benchmarks of ENRP: every registrar is an
L{rserpool.asap.registrar.ASAPRegistrar} with an
L{rserpool.enrp.machine.ENRPServer}, whose actions its
L{rserpool.actions.Runner} carries out; ENRP connections between them carry
encoded bytes (so the codec and the byte counts are real) with a small
latency; pool elements are simulated ASAP endpoints that register, answer
keep-alives and re-register elsewhere when their registrar goes.

Nothing here touches a reactor: time is an injected L{IReactorTime}
(a C{twisted.internet.task.Clock} in tests).  Addresses are loopback
addresses (127.0.0.0/8), never used for sockets.
"""
import ipaddress
import random

from zope.interface import implementer

from rserpool.actions import Runner
from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig
from rserpool.asap.scope import Scope
from rserpool.enrp.machine import ENRPConfig, ENRPServer
from rserpool.enrp.trust import PeerPolicy
from rserpool.interfaces import IMessageConnection, NotAvailable
from rserpool.wire import (
    ENRP,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    Policy,
    PoolElement,
    ProtocolError,
    Registration,
    RegistrationResponse,
    ServerInformation,
    StreamDecoder,
    TCPTransport,
    encode,
)

__all__ = ["MemoryNetwork", "MemoryRegistrar", "MemoryPE"]

#: Round Robin (RFC 5356 section 3.1.1).
ROUND_ROBIN = 0x00000001


class _Timer:
    def __init__(self, clock, callback):
        self.clock = clock
        self.callback = callback
        self.call = None

    def schedule(self, when):
        call = self.call
        if call is not None and call.active():
            if call.getTime() <= when:
                return
            call.cancel()
        self.call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self):
        self.call = None
        self.callback(self.clock.seconds())

    def cancel(self):
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


@implementer(IMessageConnection)
class _Connection:
    """
    One end of an in-memory message connection.
    """

    mapping = "memory"

    def __init__(self, network, protocol, local, peer, deliver, lost):
        self.network = network
        self.protocol = protocol
        self.local = (local, 1)
        self.peer = (peer, 2)
        self.peer_addresses = (peer,)
        self.peer_transport = TCPTransport(2, (peer,))
        self._deliver = deliver
        self._lost = lost
        self.other = None
        self.open = True
        self.decoder = StreamDecoder(protocol)

    def __repr__(self):
        return "<memory %s %s->%s>" % (self.protocol, self.local[0], self.peer[0])

    def send(self, message):
        if self.protocol == ENRP:
            self.send_encoded(encode(message))
        elif self.open:
            self.network.later(self.other._receive_message, message)

    def send_encoded(self, data):
        if not self.open:
            return
        if self.protocol == ENRP:
            network = self.network
            network.enrp_bytes += len(data)
            network.enrp_messages += 1
            key = (int.from_bytes(data[4:8], "big"), data[0], data[1])
            network.sent[key] = network.sent.get(key, 0) + 1
        self.network.later(self.other._receive_bytes, data)

    def _receive_bytes(self, data):
        if not self.open:
            return
        if self.protocol != ENRP:
            for item in self.decoder.feed(data):
                self._deliver(self, item)
            return
        for item in self.decoder.feed(data):
            if not self.open:
                break
            self._deliver(self, item)

    def _receive_message(self, message):
        if self.open:
            self._deliver(self, message)

    def close(self):
        if not self.open:
            return
        self.open = False
        self._lost(self)
        other = self.other
        if other is not None and other.open:
            self.network.later(other._remote_closed)

    def _remote_closed(self):
        if self.open:
            self.open = False
            self._lost(self)

    def rtt(self):
        raise NotAvailable("rtt", self.mapping)

    def rto(self):
        raise NotAvailable("rto", self.mapping)

    def path_mtu(self):
        raise NotAvailable("path_mtu", self.mapping)


class MemoryNetwork:
    """
    Registrars and PEs joined in memory under one clock.

    @ivar clock: the L{IReactorTime}.
    @ivar latency: one-way delay of every message (seconds).
    @ivar pes_reachable: whether a registrar can reach a PE it adopted in a
        takeover (SCTP's one-to-many ASAP socket: C{True}; our TCP mapping:
        C{False}).
    @ivar enrp_bytes: ENRP bytes sent so far, all registrars together.
    @ivar enrp_messages: ENRP messages sent so far.
    @ivar sent: C{{(sender id, message type, flags): count}} of ENRP
        messages sent.
    @ivar policy: the L{PeerPolicy} of every registrar added without one:
        by default the whole network (127.0.0.0/8) is trusted, as a
        cluster behind C{--enrp-peer-networks} is.
    """

    def __init__(self, clock, latency=0.001, pes_reachable=True, rng=None, policy=None):
        self.clock = clock
        self.policy = policy if policy is not None else PeerPolicy(networks=("127.0.0.0/8",))
        self.latency = latency
        self.pes_reachable = pes_reachable
        self.rng = rng if rng is not None else random.Random(5353)
        self.registrars = {}
        self.pes = []
        self.enrp_bytes = 0
        self.enrp_messages = 0
        self.sent = {}
        self._groups = None

    def later(self, fn, *args):
        self.clock.callLater(self.latency, fn, *args)

    def add_registrar(self, server_id, peers=(), config=None, enrp=None, start=True, policy=None):
        """
        Create a registrar at 127.0.0.N and start it.

        @param peers: server ids of its static peers.
        @param config: a L{RegistrarConfig} (or C{None} for defaults).
        @param enrp: an L{ENRPConfig}.
        @param policy: a L{PeerPolicy} (the network's by default).
        @rtype: L{MemoryRegistrar}
        """
        registrar = MemoryRegistrar(self, server_id, peers, config, enrp,
                                    policy if policy is not None else self.policy)
        self.registrars[server_id] = registrar
        if start:
            registrar.start()
        return registrar

    def add_pe(self, pe_id, handle=b"pool", life=600000, hunt=True):
        """
        A simulated PE at its own loopback address.

        @rtype: L{MemoryPE}
        """
        pe = MemoryPE(self, pe_id, handle, life, hunt)
        self.pes.append(pe)
        return pe

    def address(self, server_id):
        return ipaddress.ip_address("127.0.%d.%d" % ((server_id >> 8) & 0xFF, server_id & 0xFF or 1))

    def reachable(self, a, b):
        """
        Whether registrars C{a} and C{b} (ids) can talk (no partition).
        """
        if self._groups is None:
            return True
        return any(a in g and b in g for g in self._groups)

    def partition(self, *groups):
        """
        Split the registrars into groups of ids: connections across groups
        are cut and no new ones succeed until L{heal}.
        """
        self._groups = [set(g) for g in groups]
        for registrar in self.registrars.values():
            for conn in list(registrar.enrp_connections):
                other = conn.other.owner if conn.other is not None else None
                if other is not None and not self.reachable(registrar.server_id, other.server_id):
                    conn.close()

    def heal(self):
        """
        End a partition; the registrars reconnect to their static peers.
        """
        self._groups = None

    def connect(self, a, b):
        """
        Open an ENRP connection from registrar C{a} to C{b}.

        @return: C{True} if it opened.
        """
        if not (a.alive and b.alive and self.reachable(a.server_id, b.server_id)):
            return False
        ca = _Connection(self, ENRP, a.address, b.address, a._enrp_message, a._enrp_lost)
        cb = _Connection(self, ENRP, b.address, a.address, b._enrp_message, b._enrp_lost)
        ca.other, cb.other = cb, ca
        ca.owner, cb.owner = a, b
        a.enrp_connections.add(ca)
        b.enrp_connections.add(cb)
        a.run(a.enrp.connection_made(ca, self.clock.seconds(), outgoing=True))
        b.run(b.enrp.connection_made(cb, self.clock.seconds(), outgoing=False))
        return True

    def by_address(self, address):
        for registrar in self.registrars.values():
            if registrar.address == address:
                return registrar
        return None

    def run(self, seconds, step=0.01):
        """
        Advance the clock by C{seconds} in steps (a bounded loop).
        """
        steps = int(round(seconds / step))
        for _ in range(steps):
            self.clock.advance(step)

    def live(self):
        """
        The live registrars.
        """
        return [r for r in self.registrars.values() if r.alive]


class MemoryRegistrar:
    """
    One registrar of a L{MemoryNetwork}: ASAP side, ENRP side, timers.

    @ivar registrar: the L{ASAPRegistrar}.
    @ivar enrp: the L{ENRPServer}.
    """

    def __init__(self, network, server_id, peers=(), config=None, enrp=None, policy=None):
        self.network = network
        self.server_id = server_id
        self.address = network.address(server_id)
        self.static = list(peers)
        self.alive = False
        self.enrp_connections = set()
        self.asap_connections = set()
        clock = network.clock
        if config is None:
            config = RegistrarConfig(server_id=server_id, min_address_scope=Scope.LOOPBACK,
                                     log_events=False)
        self._asap_timer = _Timer(clock, self._asap_fire)
        self.registrar = ASAPRegistrar(config, rng=random.Random(server_id))
        self._enrp_timer = _Timer(clock, self._enrp_fire)
        self.enrp = ENRPServer(
            self.registrar,
            enrp if enrp is not None else ENRPConfig(),
            information=lambda: ServerInformation(server_id, TCPTransport(9901, (self.address,))),
            rng=random.Random(server_id),
            reach_pe=self._reach_pe,
            policy=policy,
        )
        #: carries out what the two machines return
        self.run = Runner({self.registrar: self._asap_timer, self.enrp: self._enrp_timer},
                          dial=self._connect_to)
        self._retry = None

    def __repr__(self):
        return "<MemoryRegistrar %08x%s>" % (self.server_id, "" if self.alive else " dead")

    @property
    def handlespace(self):
        return self.registrar.handlespace

    def start(self):
        """
        Start ENRP and connect to the static peers (retried every second).
        """
        self.alive = True
        self.run(self.enrp.start(self.network.clock.seconds()))
        self._connect_static()

    def _connect_static(self):
        self._retry = None
        if not self.alive:
            return
        for pid in self.static:
            other = self.network.registrars.get(pid)
            if other is None:
                continue
            if not any(c.open and c.other.owner is other for c in self.enrp_connections):
                self.network.connect(self, other)
        self._retry = self.network.clock.callLater(1.0, self._connect_static)

    def _connect_to(self, information):
        other = self.network.by_address(information.transport.addresses[0])
        if other is not None and other is not self:
            self.network.connect(self, other)

    def _reach_pe(self, pe):
        if not self.network.pes_reachable:
            return None
        for simulated in self.network.pes:
            if simulated.pe_id == pe.pe_id and simulated.alive:
                return simulated.reach(self)
        return None

    def crash(self):
        """
        Die at once (SIGKILL): connections close, timers stop.
        """
        self.alive = False
        self._asap_timer.cancel()
        self._enrp_timer.cancel()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        for conn in list(self.enrp_connections) + list(self.asap_connections):
            conn.close()

    def _asap_fire(self, now):
        if self.alive:
            self.run(self.registrar.timer_fired(now))

    def _enrp_fire(self, now):
        if self.alive:
            self.run(self.enrp.timer_fired(now))

    def _enrp_message(self, conn, item):
        if not self.alive:
            return
        now = self.network.clock.seconds()
        if isinstance(item, ProtocolError):
            self.run(self.enrp.protocol_error(conn, item, now))
        else:
            self.run(self.enrp.message_received(conn, item, now))

    def _enrp_lost(self, conn):
        self.enrp_connections.discard(conn)
        if self.alive:
            self.run(self.enrp.connection_lost(conn, self.network.clock.seconds()))

    def _asap_message(self, conn, message):
        if self.alive:
            self.run(self.registrar.message_received(conn, message, self.network.clock.seconds()))

    def _asap_lost(self, conn):
        self.asap_connections.discard(conn)
        if self.alive:
            self.run(self.registrar.connection_lost(conn, self.network.clock.seconds()))

    def owners(self):
        """
        C{{(handle, pe_id): home registrar id}} of this registrar's view.
        """
        return {(pe.handle, pe.pe_id): pe.home_registrar for pe in self.handlespace.elements()}


class MemoryPE:
    """
    A simulated pool element: registers over an ASAP connection, answers
    Endpoint Keep Alives (and follows the H flag to its new home), and,
    when C{hunt} is set, registers at another live registrar when its
    registrar's connection goes (PE-side hunting).

    @ivar home: the id its last Registration Response or Keep Alive with H
        came from.
    """

    def __init__(self, network, pe_id, handle, life, hunt):
        self.network = network
        self.pe_id = pe_id
        self.handle = handle
        self.life = life
        self.hunt = hunt
        self.address = ipaddress.ip_address("127.1.%d.%d" % ((pe_id >> 8) & 0xFF, pe_id & 0xFF))
        self.alive = True
        self.home = 0
        self.connection = None
        self.keep_alives_h = 0

    def registration(self):
        return Registration(self.handle, PoolElement(
            self.pe_id, 0, self.life, TCPTransport(7000, (self.address,)),
            Policy(ROUND_ROBIN, ())))

    def _open(self, registrar):
        ours = _Connection(self.network, "asap", self.address, registrar.address,
                           self._message, self._lost)
        theirs = _Connection(self.network, "asap", registrar.address, self.address,
                             registrar._asap_message, registrar._asap_lost)
        ours.other, theirs.other = theirs, ours
        ours.owner, theirs.owner = self, registrar
        ours.registrar = registrar
        registrar.asap_connections.add(theirs)
        registrar.run(registrar.registrar.connection_made(theirs, self.network.clock.seconds()))
        return ours, theirs

    def register(self, registrar):
        """
        Connect to a registrar and register.
        """
        ours, _ = self._open(registrar)
        self.connection = ours
        ours.send(self.registration())

    def reach(self, registrar):
        """
        A registrar reaches this PE's ASAP endpoint (SCTP-like): the
        registrar's end of a new connection.
        """
        _, theirs = self._open(registrar)
        return theirs

    def _message(self, conn, message):
        if not self.alive:
            return
        if isinstance(message, RegistrationResponse) and not message.reject:
            self.home = conn.registrar.server_id
        elif isinstance(message, EndpointKeepAlive):
            if message.home:
                self.keep_alives_h += 1
                self.home = message.server_id
                self.connection = conn
            conn.send(EndpointKeepAliveAck(message.pool_handle, self.pe_id))

    def _lost(self, conn):
        if conn is not self.connection or not self.alive or not self.hunt:
            return
        self.connection = None
        live = sorted((r for r in self.network.live()), key=lambda r: r.server_id)
        if live:
            # Hunt: the lowest live id, for determinism.
            self.network.later(self.register, live[0])

    def kill(self):
        """
        The PE dies: its connections close.
        """
        self.alive = False
        if self.connection is not None:
            self.connection.close()
