"""
The ENRP server (RFC 5353), sans I/O: registrars that share one
handlespace and survive each other's failure.

L{ENRPServer} sits beside an L{rserpool.asap.registrar.ASAPRegistrar} and
shares its handlespace.  It is driven like the ASAP side: connection events
and decoded ENRP messages go in with the current time
(L{ENRPServer.connection_made}, L{ENRPServer.message_received},
L{ENRPServer.multicast_received}, L{ENRPServer.protocol_error},
L{ENRPServer.connection_lost}, L{ENRPServer.timer_fired}), and each
returns the actions to carry out (L{rserpool.actions}): L{Send
<rserpool.actions.Send>} over a connection
(L{rserpool.interfaces.IMessageConnection}: it never learns whether they
are TCP, SCTP or a test's fake), L{Close <rserpool.actions.Close>} one,
L{Schedule <rserpool.actions.Schedule>} its next wake-up (or the ASAP
side's), L{Multicast <rserpool.actions.Multicast>} a Presence, and L{Dial
<rserpool.actions.Dial>} a peer it has no connection to: the adapter opens
a connection and reports it with C{connection_made(conn, now,
outgoing=True)}.  It shares the ASAP registrar's outbox, so an ASAP event
that changes a PE returns the Handle Updates too.  The one thing it asks
the adapter directly is C{reach_pe(pe)}, a connection to an adopted PE
(a look-up; what goes over it is a L{Send <rserpool.actions.Send>}).

Procedures, by their RFC 5353 names:

 - Peer discovery (section 3.2, "ENRP Server Initialization"; 3.4.1,
   "Discovering New Peer"): static peers (the adapter connects to them),
   Presence over multicast when enabled, List Request/List Response.
 - Mentor (section 3.2.2, "Acquire Peer Server List"): the first peer
   heard during startup is the mentor; List Request, then Handle Table
   Requests (section 3.2.3, "Download ENRP Handlespace Data from Mentor
   Peer"), following the M flag of each Handle Table Response (section
   2.3, "ENRP_HANDLE_TABLE_RESPONSE Message").  Without a mentor within
   the mentor discovery timeout the server starts on its own.
 - Handle Update (section 3.3, "Server Handlespace Update"): ADD_PE and
   DEL_PE to every peer for every change of a PE this server is home
   for; peers' updates are applied.
 - Peer monitoring (sections 3.4.2, "Server Sending Heartbeat", and
   3.4.3, "Detecting Peer Server Failure"): Presence every peer heartbeat
   cycle; a peer not heard for max-time-last-heard gets a Presence with
   the R flag, and one that does not answer within max-time-no-response
   is unreachable.
 - Takeover (section 3.5, "Taking Over a Failed Peer Server"): Init
   Takeover to all peers, Init Takeover Acks, competing takeovers resolved
   by server id (the lower id wins, RFC 5353 section 3.5.1 as RSPLIB
   implements it), Takeover Server, then Endpoint Keep Alive with the H
   flag to each adopted PE (L{ASAPRegistrar.adopt}).  A target that is
   alive answers an Init Takeover with Presence to all its peers.
 - Audit (section 3.6, "Handlespace Data Auditing and Re-synchronization";
   3.6.1 and 3.6.2): the PE checksum of a peer's Presence is compared
   with the locally computed checksum of the PEs that peer owns; on a
   mismatch a Handle Table Request with the W flag fetches its PEs again,
   and the ones it no longer claims are purged.
 - Errors (section 2.10, ENRP Error; section 3.7, "Handling Unrecognized
   Messages or Unrecognized Parameters"): undecodable messages are
   answered with an ENRP Error carrying the cause; requests addressed to
   another server id are rejected with the R flag.

Who is a peer (RFC 5355 sections 2.5, 2.15 and 2.17; L{PeerPolicy
<rserpool.enrp.trust.PeerPolicy>}): a registrar is admitted by its
Presence, over a connection we opened, a TLS-PSK connection, or one from
an address of a static peer, of a peer another peer named, or of the
accepted networks.  Its id is then bound to that connection (and to its
addresses and TLS-PSK identity): state changes (Handle Update, Handle
Table Response, Init Takeover and its Ack, Takeover Server, List
Response) are applied only from a peer over a connection bound to it; a
message that claims another id than its connection's, or a known id over
a connection from elsewhere, is refused with an ENRP Error (Rejection due
to Security Considerations).  List and Handle Table Requests are answered
to peers, to this host and, if the policy says so, to anyone; others get
the R flag.

Our choices where the RFC leaves room are in ``doc/enrp.rst``.
"""
import collections
import enum
import ipaddress
import random
import struct

import attrs
from twisted.logger import Logger

from rserpool.actions import Close, Dial, Multicast, Schedule, Send
from rserpool.asap.registrar import UserTransport, wire_policy
from rserpool.codes import ENRPType, ErrorCause
from rserpool.enrp.trust import PeerPolicy
from rserpool.handlespace import HandlespaceError, PolicySettings, TimerCode
from rserpool.wire import (
    ADD_PE,
    DEL_PE,
    ENRPError,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    OperationError,
    PoolElement,
    Presence,
    ServerInformation,
    TakeoverServer,
    TCPTransport,
    brief,
    echo,
    encode,
    encode_parameter,
)
from rserpool.wire.params import encode_pool_handle

__all__ = ["ENRPConfig", "ENRPServer", "Peer", "PeerPolicy", "PeerTimer",
           "reachable_information", "wire_pool_element"]

_U32 = struct.Struct("!I")
#: Where a server says it listens when the adapter does not tell
#: (ENRP's port on loopback).
_DEFAULT_TRANSPORT = TCPTransport(9901, (ipaddress.ip_address("127.0.0.1"),))
_MAX_MESSAGE = 0xFFFF
#: Room kept free in a Handle Table Response below the 16-bit length limit.
_PAGE_BYTES = 60000
#: Handlespace places one Handle Table Response looks at, at most (a page
#: of a W-flagged series may hold fewer PEs, with the M flag set).
_SCAN_BUDGET = 65536
_SCAN_CHUNK = 512
#: ENRP Errors a connection gets for refused messages; then it gets none.
_ERRORS_PER_CONNECTION = 4
#: Refused messages after which a connection is closed: a registrar that
#: is not a peer has nothing to send but its Presence.
_MAX_REFUSED = 64
#: Refusal log lines per interval; the rest is summed up once per interval.
_REFUSAL_LINES = 10
_REFUSAL_INTERVAL = 60.0
#: Addresses kept per peer.
_MAX_PEER_ADDRESSES = 64


@attrs.frozen
class ENRPConfig:
    """
    ENRP timers and limits.  Times are in seconds; the defaults are
    RSPLIB's (``rspregistrar.h``).

    @ivar heartbeat_cycle: PEER-HEARTBEAT-CYCLE, between Presence messages
        to every peer (RSPLIB 2.444 s; each cycle varied by +-12.5 %).
    @ivar max_time_last_heard: MAX-TIME-LAST-HEARD, silence after which a
        peer is sent a Presence with the R flag (5 s).
    @ivar max_time_no_response: MAX-TIME-NO-RESPONSE, how long that peer has
        to answer before it is unreachable (5 s).
    @ivar mentor_discovery_timeout: how long to look for a mentor at
        startup (5 s).
    @ivar takeover_expiry: how long a takeover waits for Init Takeover
        Acks (5 s).
    @ivar max_elements_per_ht_request: PEs per Handle Table Response (128).
    """

    heartbeat_cycle: float = 2.444
    max_time_last_heard: float = 5.0
    max_time_no_response: float = 5.0
    mentor_discovery_timeout: float = 5.0
    takeover_expiry: float = 5.0
    max_elements_per_ht_request: int = 128

    def __attrs_post_init__(self):
        for name in ("heartbeat_cycle", "max_time_last_heard", "max_time_no_response",
                     "mentor_discovery_timeout", "takeover_expiry"):
            if getattr(self, name) <= 0:
                raise ValueError("%s must be positive" % name.replace("_", "-"))
        if not 1 <= self.max_elements_per_ht_request <= 0xFFFF:
            raise ValueError("max-elements-per-ht-request must be between 1 and 65535")


class PeerTimer(enum.Enum):
    """
    The one timer a peer entry runs (as RSPLIB's peer list does).
    """

    #: Fires when the peer was not heard for max-time-last-heard.
    LAST_HEARD = "max-time-last-heard"
    #: Fires when a Presence with R went unanswered.
    NO_RESPONSE = "max-time-no-response"
    #: Fires when our takeover of the peer waited long enough for acks.
    TAKEOVER_EXPIRY = "takeover-expiry"


@attrs.define(eq=False)
class _Takeover:
    target: int
    outstanding: set


@attrs.define(eq=False)
class _Sync:
    # A handle table download from a peer (RFC 5353 section 3.2.3).
    owner_only: bool
    marked: set = attrs.Factory(set)


@attrs.define(eq=False)
class Peer:
    """
    A peer list entry (RFC 5353 section 3.4).

    @ivar server_id: the peer's id.
    @ivar information: its L{ServerInformation} (where it listens), or
        C{None} when not yet known.
    @ivar connections: the live connections bound to it.
    @ivar last_heard: when a message from it last arrived (seconds).
    @ivar timer: its L{PeerTimer}.
    @ivar deadline: when that timer fires.
    @ivar takeover_by: the id of a peer whose takeover of this one we
        acknowledged, or 0.
    """

    server_id: int
    information: object = None
    connections: list = attrs.Factory(list)
    last_heard: float = 0.0
    timer: PeerTimer = PeerTimer.LAST_HEARD
    deadline: float = 0.0
    takeover_by: int = 0
    takeover: object = None
    sync: object = None
    listed: bool = False
    #: the addresses it is known at (its Server Information's, and those of
    #: the connections it was admitted over)
    addresses: set = attrs.Factory(set)
    #: the TLS-PSK identity it proved, once admitted over TLS-PSK
    identity: object = None
    #: the id whose Init Takeover of this peer we last acknowledged
    acked_takeover: int = 0

    def learn(self, addresses):
        for a in addresses:
            if len(self.addresses) >= _MAX_PEER_ADDRESSES:
                break
            if not a.is_unspecified:
                self.addresses.add(a)


@attrs.define(eq=False)
class _Conn:
    outgoing: bool
    #: the peer id this connection is bound to (kept when the peer leaves
    #: the peer list: the id may come back over it, no other)
    peer_id: int = 0
    refused: int = 0
    errors: int = 0


@attrs.define(eq=False)
class _Cursor:
    # A Handle Table Response series being sent over one connection: only
    # a position in the handlespace (Handlespace.scan), never a copy.
    owner_only: bool
    position: object = 0


def wire_pool_element(pe):
    """
    The Pool Element parameter for a handlespace PE in ENRP messages: with
    the ASAP transport, as RSPLIB sends it in Handle Update and Handle
    Table Response.

    @param pe: a L{rserpool.handlespace.RegisteredPE} whose user transport
        is a L{UserTransport}.
    @rtype: L{rserpool.wire.PoolElement}
    """
    return PoolElement(
        pe.pe_id,
        pe.home_registrar,
        pe.registration_life,
        pe.user_transport.wire,
        wire_policy(pe.policy),
        pe.asap_transport,
    )


def reachable_information(information, addresses):
    """
    A peer's L{ServerInformation} with the unspecified addresses (0.0.0.0,
    ::) of its transport replaced by C{addresses}, the addresses of the
    connection its Presence came over.  A registrar whose ENRP endpoint
    listens on the wildcard address names that address; passed on as it is
    in a List Response, it would send the receiver to its own ENRP endpoint
    (the multicast side does the same with the datagram's source,
    L{rserpool.services.peering.presence_from}).

    @param information: a L{ServerInformation}.
    @param addresses: L{ipaddress} addresses (a connection's
        C{peer_addresses}).
    @return: C{information}, or a copy with the addresses replaced (kept
        as it is when C{addresses} is empty).
    """
    transport = information.transport
    if not addresses or not any(a.is_unspecified for a in transport.addresses):
        return information
    # A dict keeps the order and finds duplicates in constant time: a
    # Presence may list 8,000 addresses (issue #14).
    out = {}
    for a in transport.addresses:
        for b in (addresses if a.is_unspecified else (a,)):
            out[b] = None
    transport = attrs.evolve(transport, addresses=tuple(out))
    return ServerInformation(information.server_id, transport)


#: Messages that change our state: applied only from a peer over a
#: connection bound to it (RFC 5355 sections 2.5 and 2.17).
_STATE_CHANGES = frozenset([HandleUpdate, HandleTableResponse, InitTakeover, InitTakeoverAck,
                            TakeoverServer, ListResponse])


def _remote(conn):
    # The remote addresses of a connection (none for a test's fake).
    addresses = tuple(getattr(conn, "peer_addresses", ()) or ())
    if not addresses:
        address = (getattr(conn, "peer", None) or (None,))[0]
        if address is not None:
            addresses = (address,)
    return addresses


def _where(conn):
    addresses = _remote(conn)
    return str(addresses[0]) if addresses else "an unknown address"


def _with_receiver(data, receiver_id):
    # Every ENRP body starts with sender id and receiver id (RFC 5353
    # section 2): one encoding serves every peer.
    return data[:8] + _U32.pack(receiver_id) + data[12:]


class ENRPServer:
    """
    The ENRP state machine of one registrar.

    @ivar registrar: the L{rserpool.asap.registrar.ASAPRegistrar} whose
        handlespace this server shares.
    @ivar server_id: this registrar's id.
    @ivar peers: C{{server id: L{Peer}}}.
    @ivar ready: C{False} during startup (mentor discovery and handle table
        download), then C{True}.
    @ivar on_ready: callables called once with C{True} (synchronised from a
        mentor) or C{False} (started alone) when startup ends.
    @ivar on_takeover: callables called with C{(target id, new owner id,
        list of moved PEs)} after any takeover this server applies.
    @ivar policy: the L{PeerPolicy}: who may become a peer, who may read.
    @ivar refused: C{{reason: count}} of the ENRP messages refused (RFC
        5355 sections 2.5 and 2.17).
    """

    log = Logger()

    def __init__(self, registrar, config=None, information=None, multicast=False,
                 rng=None, reach_pe=None, policy=None):
        """
        @param registrar: the L{rserpool.asap.registrar.ASAPRegistrar}.
        @param config: an L{ENRPConfig}.
        @param information: a callable returning this server's
            L{ServerInformation} (its ENRP transport; the listening port may
            be known only once it listens).
        @param multicast: whether Presence goes to the ENRP multicast group
            too (L{Multicast} actions; also the attribute C{multicast}).
        @param rng: a C{random.Random} for the heartbeat jitter.
        @param reach_pe: C{reach_pe(pe)}: a connection to the ASAP endpoint
            of a PE adopted in a takeover, or C{None} (see
            L{ASAPRegistrar.adopt}).
        @param policy: a L{PeerPolicy}; by default registrars are admitted
            only over connections we open, TLS-PSK ones, and from the
            addresses of peers named by our peers, and only this host may
            read the handlespace.
        """
        self.registrar = registrar
        self.handlespace = registrar.handlespace
        self.server_id = registrar.server_id
        self.config = config if config is not None else ENRPConfig()
        self._information = information
        self.multicast = bool(multicast)
        # One outbox with the ASAP side (see ASAPRegistrar.take_actions).
        self._emit = registrar.emit
        self._take = registrar.take_actions
        self.rng = rng if rng is not None else random.Random()
        self._reach_pe = reach_pe
        self.policy = policy if policy is not None else PeerPolicy()
        self.refused = collections.Counter()
        #: messages received (over connections and multicast), by class;
        #: takeovers, by outcome (for metrics, read by rserpool.web)
        self.received = collections.Counter()
        self.takeovers = collections.Counter()
        self._refusal_window = None
        self._refusal_lines = 0
        self._refusal_hidden = 0
        self.peers = {}
        self._conns = {}
        self._cursors = {}
        self.ready = False
        self.mentor = 0
        self.on_ready = []
        self.on_takeover = []
        self._started = None
        self._next_heartbeat = None
        self._handlers = {
            Presence: self._presence,
            HandleTableRequest: self._handle_table_request,
            HandleTableResponse: self._handle_table_response,
            HandleUpdate: self._handle_update,
            ListRequest: self._list_request,
            ListResponse: self._list_response,
            InitTakeover: self._init_takeover,
            InitTakeoverAck: self._init_takeover_ack,
            TakeoverServer: self._takeover_server,
            ENRPError: self._enrp_error,
        }
        registrar.on_registered.append(self._registered)
        registrar.on_removed.append(self._removed)

    # -- lifecycle --------------------------------------------------------

    def start(self, now):
        """
        Begin: startup phase (mentor discovery, RFC 5353 section 3.2.2) and
        the heartbeat.
        """
        self._started = now
        self._next_heartbeat = now
        self._reschedule()
        return self._take()

    def stop(self):
        """
        Stop observing the registrar.
        """
        for observers, fn in ((self.registrar.on_registered, self._registered),
                              (self.registrar.on_removed, self._removed)):
            if fn in observers:
                observers.remove(fn)

    @property
    def connections(self):
        """
        The ENRP connections this server knows (a list).
        """
        return list(self._conns)

    @property
    def information(self):
        """
        This server's L{ServerInformation}.
        """
        if self._information is not None:
            return self._information()
        return ServerInformation(self.server_id, _DEFAULT_TRANSPORT)

    # -- connection events ------------------------------------------------

    def connection_made(self, conn, now, outgoing=False):
        """
        An ENRP connection is up.  Over an outgoing one (to a static peer or
        one we were told of) we introduce ourselves at once with a Presence
        asking for a reply, which tells us the peer's id.
        """
        self._conns[conn] = _Conn(outgoing)
        if outgoing:
            self._emit(Send(conn, self._presence_message(0, True)))
        return self._take()

    def connection_lost(self, conn, now):
        """
        An ENRP connection is gone.  The peer stays in the peer list: only
        its silence (RFC 5353 section 3.4.3) declares it unreachable.
        """
        info = self._conns.pop(conn, None)
        self._cursors.pop(conn, None)
        if info is not None and info.peer_id:
            self.log.info("ENRP connection {direction} peer {id:08x} closed",
                          direction="to" if info.outgoing else "from", id=info.peer_id)
            peer = self.peers.get(info.peer_id)
            if peer is not None and conn in peer.connections:
                peer.connections.remove(conn)
        return self._take()

    def protocol_error(self, conn, error, now):
        """
        Bytes that did not decode: an ENRP Error with the codec's cause
        (RFC 5353 section 3.7), unless the RFC says to discard silently.
        """
        # At a bounded rate: anyone who reaches the port chooses how many
        # (a flood of mutated messages wrote 3 MB of log a second).
        self._log_refusal(now, "bad ENRP message from {conn!r}: {error}", conn=conn,
                          error=str(error))
        if error.report:
            info = self._conns.get(conn)
            self._emit(Send(conn, ENRPError(self.server_id, info.peer_id if info else 0,
                                            OperationError.from_error(error))))
        return self._take()

    def message_received(self, conn, message, now):
        """
        A decoded ENRP message arrived over C{conn}.

        @return: the actions.
        """
        self._message_received(conn, message, now)
        return self._take()

    def _message_received(self, conn, message, now):
        self.received[type(message)] += 1
        if message.sender_id == self.server_id:
            return  # our own (multicast loopback)
        handler = self._handlers.get(type(message))
        if handler is None:
            # An ASAP message on the ENRP side: RFC 5353 section 3.7.
            self._emit(Send(conn, ENRPError(self.server_id, 0, OperationError.of(
                ErrorCause.UNRECOGNIZED_MESSAGE, echo(message)))))
            return
        info = self._conns.get(conn)
        if info is None:
            info = self._conns[conn] = _Conn(False)
        kind = type(message)
        sender = message.sender_id
        if kind is Presence:
            why = self._admit(conn, info, sender)
            if why is not None:
                self._refuse(conn, info, message, why, now)
                return
        elif kind in _STATE_CHANGES:
            # RFC 5355 sections 2.5 and 2.17: state changes only from a
            # peer, over a connection bound to it.
            why, answer = self._check_peer(info, sender)
            if why is not None:
                self._refuse(conn, info, message, why, now, answer)
                return
        if info.peer_id == sender:
            peer = self.peers.get(sender)
            if peer is not None:
                if conn not in peer.connections:
                    peer.connections.append(conn)
                self._heard(peer, now)
        elif kind is ENRPError:
            # Never answered, and from a stranger not even logged.
            self.refused["error from a stranger"] += 1
            return
        handler(conn, message, now)
        if message.unrecognized:
            # RFC 5354 section 3: skipped parameters marked "report".
            self._emit(Send(conn, ENRPError(self.server_id, message.sender_id,
                                            OperationError.unrecognized(message.unrecognized))))
        self._reschedule()

    def multicast_received(self, message, source, now):
        """
        A Presence arrived over the ENRP multicast group (RFC 5353 section
        3.4.1: dynamic peer discovery).  A new peer is connected to.

        @param source: the sender's address (an L{ipaddress} address), used
            when the Server Information carries no address.
        @return: the actions.
        """
        self._multicast_received(message, source, now)
        return self._take()

    def _multicast_received(self, message, source, now):
        if not isinstance(message, Presence) or message.sender_id in (0, self.server_id):
            return
        self.received[Presence] += 1
        peer = self.peers.get(message.sender_id)
        if peer is not None:
            # A datagram proves nothing (its source is easily forged): a
            # known peer is heard over its connections only, and is dialled
            # where we know it, never where a datagram says.
            if not peer.connections and peer.information is not None:
                self._emit(Dial(peer.information))
            return
        information = message.server_information
        transport = information.transport
        if not transport.addresses and source is not None:
            transport = attrs.evolve(transport, addresses=(source,))
            information = ServerInformation(information.server_id, transport)
        # RFC 5355 section 2.5: only registrars we may accept are dialled
        # (whoever answers over a connection we open is admitted).
        policy = self.policy
        if not policy.authenticated:
            named = [a for a in information.transport.addresses if not a.is_unspecified]
            heard = [source] if source is not None else []
            if not named or not all(self._acceptable(a) for a in named + heard):
                self._refuse(None, None, message, "Presence over multicast from %s, not in "
                             "the accepted networks" % (source,), now, answer=False)
                return
        if len(self.peers) >= policy.max_peers:
            self.refused["peer list full"] += 1
            return
        peer = self._add_peer(message.sender_id, now, information)
        self._emit(Dial(information))
        self._reschedule()

    # -- timers -----------------------------------------------------------

    @property
    def next_deadline(self):
        """
        When L{timer_fired} must be called next, or C{None} before
        L{start}.
        """
        times = [p.deadline for p in self.peers.values()]
        if self._next_heartbeat is not None:
            times.append(self._next_heartbeat)
        if not self.ready and self._started is not None:
            times.append(self._started + self.config.mentor_discovery_timeout)
        return min(times) if times else None

    def timer_fired(self, now):
        """
        Time has come: heartbeat, peer timers, end of mentor discovery.
        """
        config = self.config
        if not self.ready and self._started is not None and \
                now >= self._started + config.mentor_discovery_timeout:
            # RFC 5353 section 3.2.2: no mentor in time, start alone.  A
            # download from a mentor still in progress goes on.
            self._become_ready(False)
        if self._refusal_hidden and now - self._refusal_window >= _REFUSAL_INTERVAL:
            self._flush_refusals(now)
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._heartbeat()
            # RSPLIB varies every cycle by +-12.5 % so that peers do not
            # send in lockstep.
            self._next_heartbeat = now + config.heartbeat_cycle * self.rng.uniform(0.875, 1.125)
        for peer in sorted(self.peers.values(), key=lambda p: p.deadline):
            if peer.deadline > now or self.peers.get(peer.server_id) is not peer:
                continue
            if peer.timer is PeerTimer.LAST_HEARD:
                # RFC 5353 section 3.4.3: probe the silent peer.
                self.log.info("ENRP peer {id:08x} silent for {t} s: Presence with R",
                              id=peer.server_id, t=config.max_time_last_heard)
                self._send(peer, self._presence_message(peer.server_id, True))
                peer.timer = PeerTimer.NO_RESPONSE
                peer.deadline = now + config.max_time_no_response
            elif peer.timer is PeerTimer.NO_RESPONSE:
                self._unreachable(peer, now)
            else:
                self._takeover_expired(peer, now)
        self._reschedule()
        return self._take()

    def _reschedule(self):
        when = self.next_deadline
        if when is not None:
            self._emit(Schedule(self, when))

    # -- peers ------------------------------------------------------------

    def _add_peer(self, server_id, now, information=None):
        peer = Peer(server_id, information, last_heard=now, timer=PeerTimer.LAST_HEARD,
                    deadline=now + self.config.max_time_last_heard)
        if information is not None:
            peer.learn(information.transport.addresses)
        self.peers[server_id] = peer
        self.log.info("ENRP peer {id:08x} added", id=server_id)
        return peer

    # -- who is a peer (RFC 5355 sections 2.5, 2.15, 2.17) ---------------

    def _acceptable(self, address):
        """
        Whether a registrar at C{address} may introduce itself: a static
        peer's address, one in the accepted networks, or one a peer is
        known at (named in a peer's List Response, or its own).
        """
        if self.policy.admits(address):
            return True
        return any(address in peer.addresses for peer in self.peers.values())

    def _admit(self, conn, info, sender):
        """
        Whether a Presence claiming C{sender} over C{conn} is admitted.

        @return: C{None}, or why not (one line).
        """
        if not sender:
            return "server id 0"
        if info.peer_id:
            if info.peer_id != sender:
                # RFC 5355 section 2.17: a connection speaks for one peer.
                return "it claims id %08x over the connection of peer %08x" % (
                    sender, info.peer_id)
            return None
        addresses = _remote(conn)
        identity = getattr(conn, "identity", None)
        peer = self.peers.get(sender)
        if peer is not None:
            # A known id over another connection: only from where it is
            # known, with the TLS-PSK identity it proved, and never a second
            # connection from it while one it opened to us is up.
            if peer.identity is not None and identity != peer.identity:
                return "%08x proved another TLS-PSK identity" % sender
            if identity is None and peer.addresses and addresses and \
                    not peer.addresses.intersection(addresses):
                return "%08x is known at %s, not at %s" % (
                    sender, ", ".join(sorted(str(a) for a in peer.addresses)[:3]), addresses[0])
            if not info.outgoing and identity is None and any(
                    c in self._conns and not self._conns[c].outgoing for c in peer.connections):
                return "%08x is connected already" % sender
            return None
        if len(self.peers) >= self.policy.max_peers:
            return "the peer list is full (%d peers)" % len(self.peers)
        if info.outgoing or identity is not None:
            # We dialled it (a static peer, or one a peer or the accepted
            # networks named), or it proved a registrar's key.
            return None
        if any(self._acceptable(a) for a in addresses):
            return None
        return ("not a static peer, not named by a peer, and %s is not in the accepted "
                "networks (--enrp-peer-networks)" % (addresses[0] if addresses else "its address"))

    def _check_peer(self, info, sender):
        """
        Whether a state change claiming C{sender} may be applied over a
        connection.

        @return: C{(None, None)} or C{(why, answer)}: whether to answer the
            refusal with an ENRP Error.
        """
        if not info.peer_id:
            return "no Presence of it was admitted over this connection", True
        if info.peer_id != sender:
            return "it claims id %08x over the connection of peer %08x" % (
                sender, info.peer_id), True
        if sender not in self.peers:
            # A peer we dropped (unreachable, taken over): it comes back
            # with its next Presence over this connection.
            return "peer %08x left the peer list; waiting for its Presence" % sender, False
        return None, None

    def _may_read(self, conn, info, sender):
        """
        Whether a List or Handle Table Request is answered: to a peer over
        its connection, to TLS-PSK registrars, to this host, or to anyone
        with a public dump.
        """
        if info.peer_id and info.peer_id == sender and sender in self.peers:
            return True
        policy = self.policy
        if policy.public_dump or getattr(conn, "identity", None) is not None:
            return True
        return policy.this_host(_remote(conn), tuple(getattr(conn, "local_addresses", ()) or ()))

    def _refuse(self, conn, info, message, why, now, answer=True):
        """
        Refuse a message: count it, log it at a bounded rate, answer a few
        with an ENRP Error (Rejection due to Security Considerations), and
        close a connection that keeps sending what it may not.
        """
        name = type(message).__name__
        self.refused[name] += 1
        self._log_refusal(now, "ENRP {what} from {sender:08x} at {where} refused: {why}",
                          what=name, sender=message.sender_id,
                          where=_where(conn) if conn is not None else "multicast", why=why)
        if conn is None or info is None or not answer:
            return
        info.refused += 1
        if info.errors < _ERRORS_PER_CONNECTION:
            info.errors += 1
            self._emit(Send(conn, ENRPError(self.server_id, message.sender_id, OperationError.of(
                ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS))))
        if info.refused >= _MAX_REFUSED and not info.peer_id:
            self._log_refusal(now, "closing the ENRP connection from {where}: {n} messages "
                              "refused", where=_where(conn), n=info.refused)
            self._emit(Close(conn))

    def _log_refusal(self, now, format, **fields):
        # At most _REFUSAL_LINES lines per interval, then one summary: a
        # stranger decides how many messages we refuse, not how much we log.
        if self._refusal_window is None or now - self._refusal_window >= _REFUSAL_INTERVAL:
            self._flush_refusals(now)
        if self._refusal_lines < _REFUSAL_LINES:
            self._refusal_lines += 1
            self.log.warn(format, **fields)
        else:
            self._refusal_hidden += 1

    def _flush_refusals(self, now):
        if self._refusal_hidden:
            self.log.warn("ENRP: {n} more messages refused in {t:g} s (not logged one by one)",
                          n=self._refusal_hidden, t=_REFUSAL_INTERVAL)
        self._refusal_window = now
        self._refusal_lines = 0
        self._refusal_hidden = 0

    def _heard(self, peer, now):
        # Any message from a peer shows it alive (RFC 5353 section 3.4.3):
        # its timer restarts, and a takeover of it stops (as in RSPLIB).
        peer.last_heard = now
        if peer.takeover is not None:
            self.log.info("ENRP peer {id:08x} is alive: takeover abandoned", id=peer.server_id)
            self.takeovers["abandoned"] += 1
            peer.takeover = None
        peer.takeover_by = 0
        peer.timer = PeerTimer.LAST_HEARD
        peer.deadline = now + self.config.max_time_last_heard

    def _bind(self, conn, server_id, now):
        """
        Tie a connection to a peer id; create the peer if new.
        @return: the L{Peer} and whether it is new.
        """
        info = self._conns.get(conn)
        if info is None:
            info = self._conns[conn] = _Conn(False)
        new = False
        peer = self.peers.get(server_id)
        if peer is None:
            peer = self._add_peer(server_id, now)
            new = True
        if info.peer_id != server_id:
            if info.peer_id and info.peer_id in self.peers:
                old = self.peers[info.peer_id]
                if conn in old.connections:
                    old.connections.remove(conn)
            info.peer_id = server_id
        if conn not in peer.connections:
            peer.connections.append(conn)
        return peer, new

    def _connection_for(self, peer):
        """
        The connection to send to a peer over: the one the peer opened to
        our ENRP endpoint when there is one, else ours (doc/enrp.rst,
        "Connections").

        RSPLIB accepts a Presence only over an association whose remote
        port is the port of the Server Information inside
        (C{registrarHandleENRPPresence} filters the addresses with their
        port), that is over an association with our ENRP endpoint itself;
        the one we open to a static peer leaves from an ephemeral port.
        """
        best = None
        for conn in peer.connections:
            info = self._conns.get(conn)
            if info is None:
                continue
            if not info.outgoing:
                return conn
            if best is None:
                best = conn
        return best

    def _send(self, peer, message):
        conn = self._connection_for(peer)
        if conn is None:
            return False
        self._emit(Send(conn, message))
        return True

    def _send_all(self, message, exclude=()):
        """
        Send one message to every peer, the receiver id set per peer.
        """
        data = encode(message)
        for peer in list(self.peers.values()):
            if peer.server_id in exclude:
                continue
            conn = self._connection_for(peer)
            if conn is not None:
                self._emit(Send(conn, _with_receiver(data, peer.server_id)))

    def _drop_peer(self, peer, why):
        self.log.info("ENRP peer {id:08x} removed from the peer list: {why}",
                      id=peer.server_id, why=why)
        self.peers.pop(peer.server_id, None)
        # Its connections stay bound to its id (RFC 5355 section 2.17): it
        # may come back over them with a Presence, nobody else may.

    # -- Presence (RFC 5353 sections 3.4.2, 3.4.3, 3.6.1) -----------------

    def _presence_message(self, receiver_id, reply_required):
        return Presence(self.server_id, receiver_id,
                        self.handlespace.owner_checksum(self.server_id),
                        self.information, reply_required)

    def _heartbeat(self):
        # RFC 5353 section 3.4.2: Presence to every peer every
        # PEER-HEARTBEAT-CYCLE, carrying our PE checksum for audits.
        message = self._presence_message(0, False)
        self._send_all(message)
        for conn, info in self._conns.items():
            if info.outgoing and info.peer_id not in self.peers:
                # A static peer whose id we do not know yet, or one that
                # left the peer list.
                self._emit(Send(conn, self._presence_message(0, True)))
        if self.multicast:
            self._emit(Multicast(encode(message)))

    def _presence(self, conn, message, now):
        peer, new = self._bind(conn, message.sender_id, now)
        self._heard(peer, now)
        # A wildcard ENRP address means the one the peer reached us from:
        # that is what our List Responses tell others.
        peer.information = reachable_information(
            message.server_information, tuple(getattr(conn, "peer_addresses", ()) or ()))
        # RFC 5355 section 2.17: from now on this id is known at these
        # addresses, and with this TLS-PSK identity.
        source = _remote(conn)
        peer.learn(source)
        peer.learn(peer.information.transport.addresses)
        identity = getattr(conn, "identity", None)
        if identity is not None and peer.identity is None:
            peer.identity = identity
        self._bind_dialled(peer, peer.information.transport, source, now)
        if message.reply_required:
            self._emit(Send(conn, self._presence_message(message.sender_id, False)))
        elif new:
            # RSPLIB: a new peer gets a Presence asking for an answer.
            self._emit(Send(conn, self._presence_message(message.sender_id, True)))
        if not self.ready and not self.mentor:
            # RFC 5353 section 3.2.2: the first peer heard is the mentor;
            # ask it for its peers (3.2.2) and its handlespace (3.2.3).
            self.mentor = peer.server_id
            self.log.info("ENRP mentor is {id:08x}", id=peer.server_id)
            peer.listed = True
            self._emit(Send(conn, ListRequest(self.server_id, peer.server_id)))
            peer.sync = _Sync(False)
            self._emit(Send(conn, HandleTableRequest(self.server_id, peer.server_id, False)))
            return
        if not peer.listed:
            peer.listed = True
            self._emit(Send(conn, ListRequest(self.server_id, peer.server_id)))
        if peer.sync is None:
            # RFC 5353 section 3.6.1: audit by the peer's PE checksum.
            local = self.handlespace.owner_checksum(peer.server_id)
            if local != message.checksum:
                self.log.info(
                    "ENRP audit: checksum of {id:08x} is {theirs:04x}, ours {ours:04x}: "
                    "resynchronising its PEs", id=peer.server_id, theirs=message.checksum,
                    ours=local)
                self._resync(peer, conn)

    def _bind_dialled(self, peer, transport, source, now):
        """
        Tie our unanswered outgoing connections to the ENRP endpoint a
        peer's Presence names to that peer.  RSPLIB never answers a
        Presence over the association we open to it (it comes from an
        ephemeral port, see L{_connection_for}), so such a connection
        would stay anonymous and get a Presence with R every heartbeat.
        Only a connection to an address the Presence itself came from is
        tied: a Presence naming another registrar's endpoint must not
        capture our connection to it.
        """
        for conn, info in self._conns.items():
            if info.peer_id or not info.outgoing:
                continue
            where = getattr(conn, "peer", None)
            if where is None or where[1] != transport.port:
                continue
            addresses = set(getattr(conn, "peer_addresses", ()) or ()) | {where[0]}
            if addresses & set(transport.addresses) and (not source or addresses & set(source)):
                self._bind(conn, peer.server_id, now)

    def _resync(self, peer, conn=None):
        # RFC 5353 section 3.6.2: Handle Table Request with W; PEs of the
        # peer that it no longer lists are purged at the end.
        peer.sync = _Sync(True, {(pe.handle, pe.pe_id)
                                 for pe in self.handlespace.owned_by(peer.server_id)})
        message = HandleTableRequest(self.server_id, peer.server_id, True)
        if conn is not None:
            self._emit(Send(conn, message))
        else:
            self._send(peer, message)

    # -- List Request / Response (RFC 5353 section 3.2.2) -----------------

    def _list_request(self, conn, message, now):
        if message.receiver_id not in (0, self.server_id) or \
                not self._may_read(conn, self._conns[conn], message.sender_id):
            # Misaddressed, or a stranger asking for our peers' addresses.
            self._emit(Send(conn, ListResponse(self.server_id, message.sender_id, (),
                                               reject=True)))
            return
        # Only peers we are connected to: a program that sent one Presence
        # and left (RSPLIB's hsdump does) is no server to tell others of;
        # RSPLIB would count it among the acknowledgers of its takeovers.
        servers = [self.information]
        size = 12 + len(encode_parameter(servers[0]))
        for p in self.peers.values():
            if p.information is None or p.server_id == message.sender_id or \
                    not p.connections:
                continue
            # A peer's Server Information is what its Presence said, up to
            # 64 KiB each: list those that fit in the message (issue #14).
            try:
                tlv = encode_parameter(p.information)
            except ValueError:
                continue
            if size + len(tlv) <= _MAX_MESSAGE:
                size += len(tlv)
                servers.append(p.information)
        self._emit(Send(conn, ListResponse(self.server_id, message.sender_id, servers)))

    def _list_response(self, conn, message, now):
        if message.reject:
            self.log.info("ENRP List Request rejected by {id:08x}", id=message.sender_id)
            return
        for info in message.servers:
            if info.server_id in (0, self.server_id) or info.server_id in self.peers:
                continue
            if len(self.peers) >= self.policy.max_peers:
                self.refused["peer list full"] += 1
                break
            # A peer named by a peer: dialled, and admitted from the
            # addresses named (RFC 5353 section 3.2.2).
            self._add_peer(info.server_id, now, info)
            self._emit(Dial(info))

    # -- Handle Table Request / Response (RFC 5353 section 3.2.3) ---------

    def _handle_table_request(self, conn, message, now):
        if message.receiver_id not in (0, self.server_id) or \
                not self._may_read(conn, self._conns[conn], message.sender_id):
            # Misaddressed, or a stranger: peers, this host (RSPLIB's
            # hsdump, ``rserpool dump``) and, with a public dump, anyone
            # get the handlespace (doc/enrp.rst, "Who may read").
            self._emit(Send(conn, HandleTableResponse(self.server_id, message.sender_id, (),
                                                      reject=True)))
            return
        # One page per request, built when asked from a position in the
        # handlespace: a series holds no copy of the table, and a requester
        # that does not read its answers is not read from either (the
        # transport's write guard), so no connection holds more than a page
        # or two.
        cursor = self._cursors.get(conn)
        if cursor is None or cursor.owner_only != message.own_children_only:
            cursor = self._cursors[conn] = _Cursor(message.own_children_only)
        data, more = self._page(cursor, message.sender_id)
        self._emit(Send(conn, data))
        if not more:
            del self._cursors[conn]

    def _page(self, cursor, receiver_id):
        """
        The next encoded Handle Table Response of a series: at most
        max-elements-per-ht-request PEs, under the 16-bit message length,
        with the M flag while PEs remain.  PEs come in the handlespace's
        storage order (L{Handlespace.scan}), grouped by pool handle within
        the page; a PE present throughout the series is sent exactly once.
        """
        hs = self.handlespace
        own = self.server_id
        owner_only = cursor.owner_only
        limit = self.config.max_elements_per_ht_request
        groups = {}
        size = 12
        count = 0
        position = cursor.position
        budget = _SCAN_BUDGET
        while position is not None and count < limit and budget > 0:
            chunk = min(_SCAN_CHUNK, budget)
            budget -= chunk
            found, following = hs.scan(position, chunk)
            stop = None
            for place, pe in found:
                if owner_only and pe.home_registrar != own:
                    continue
                tlv = encode_parameter(wire_pool_element(pe))
                handle = pe.handle
                tlvs = groups.get(handle)
                extra = len(tlv) + (0 if tlvs is not None else len(encode_pool_handle(handle)))
                if count >= limit or (size + extra > _PAGE_BYTES and count):
                    stop = place
                    break
                if tlvs is None:
                    tlvs = groups[handle] = []
                tlvs.append(tlv)
                size += extra
                count += 1
            position = stop if stop is not None else following
        cursor.position = position
        more = position is not None
        parts = [_U32.pack(own), _U32.pack(receiver_id)]
        for handle, tlvs in groups.items():
            parts.append(encode_pool_handle(handle))
            parts.extend(tlvs)
        flags = 0x02 if more else 0
        header = bytes((ENRPType.HANDLE_TABLE_RESPONSE, flags, size >> 8, size & 0xFF))
        return header + b"".join(parts), more

    def _handle_table_response(self, conn, message, now):
        peer = self.peers.get(message.sender_id)
        if peer is None or peer.sync is None:
            self.log.debug("unsolicited Handle Table Response from {id:08x}",
                           id=message.sender_id)
            return
        sync = peer.sync
        if message.reject:
            self.log.info("ENRP Handle Table Request rejected by {id:08x}", id=peer.server_id)
            peer.sync = None
            if self.mentor == peer.server_id and not self.ready:
                self.mentor = 0
            return
        for entry in message.entries:
            for param in entry.pool_elements:
                if sync.owner_only and param.home_registrar != peer.server_id:
                    # W asks for the sender's own PEs: it speaks for no
                    # other registrar's (RFC 5355 section 2.17).
                    self.refused["audit entry of another home"] += 1
                    continue
                self._apply(entry.pool_handle, param, now, peer.server_id)
                if param.home_registrar == peer.server_id:
                    sync.marked.discard((entry.pool_handle, param.identifier))
        if message.more_to_send:
            # RFC 5353 section 3.2.3: ask again for the rest.
            self._emit(Send(conn, HandleTableRequest(self.server_id, peer.server_id,
                                                     sync.owner_only)))
        else:
            peer.sync = None
            if sync.owner_only and sync.marked:
                purged = 0
                for handle, pe_id in sync.marked:
                    pe = self.handlespace.get(handle, pe_id)
                    if pe is not None and pe.home_registrar == peer.server_id:
                        self.handlespace.remove(pe)
                        purged += 1
                if purged:
                    self.log.info("ENRP audit: purged {n} PEs {id:08x} no longer owns",
                                  n=purged, id=peer.server_id)
            if not self.ready and self.mentor == peer.server_id:
                self._become_ready(True)
        self.registrar.reschedule()

    def _become_ready(self, from_mentor):
        if self.ready:
            return
        self.ready = True
        self.log.info(
            "ENRP server {id:08x} ready ({how}, {n} PEs)", id=self.server_id,
            how="handlespace from mentor %08x" % self.mentor if from_mentor else "no mentor",
            n=len(self.handlespace))
        for observer in self.on_ready:
            observer(from_mentor)

    # -- Handle Update (RFC 5353 section 3.3) -----------------------------

    def _apply(self, handle, param, now, sender):
        """
        Store a PE a peer told us of.

        @return: C{"own"} (it names us as home: skipped, as RSPLIB does),
            C{"defended"} (we are its home and hold its ASAP connection: the
            claim is refused), C{"error"} or C{"stored"}.
        """
        hs = self.handlespace
        home = param.home_registrar
        if home == self.server_id:
            return "own"
        existing = hs.get(handle, param.identifier)
        if existing is not None and existing.home_registrar == self.server_id and \
                existing.connection is not None and \
                existing.connection in self.registrar.connections:
            # We are the PE's home and it is registered with us over a live
            # connection: a peer's stale or partitioned view loses.
            return "defended"
        try:
            settings = PolicySettings.from_values(param.policy.policy_type, param.policy.values)
            life = param.registration_life
            pe = hs.register(
                handle, param.identifier, home_registrar=home, policy=settings,
                user_transport=UserTransport(param.user_transport), now=now,
                registration_life=life, asap_transport=param.asap_transport,
                connection=None,
                timer=(TimerCode.EXPIRY, now + life / 1000.0) if life > 0 else None,
            ).pe
        except HandlespaceError as e:
            self.log.warn("PE {id:08x} in {handle} from peer {peer:08x} not stored: {why}",
                          id=param.identifier, handle=brief(handle), peer=sender, why=e.reason)
            return "error"
        if life <= 0:
            # A life of 0 or less never expires.
            hs.clear_timer(pe)
        return "stored"

    def _handle_update(self, conn, message, now):
        hs = self.handlespace
        handle = message.pool_handle
        param = message.pool_element
        if message.action == ADD_PE:
            home = param.home_registrar
            if home not in (message.sender_id, self.server_id):
                # RFC 5353 section 3.3: a registrar announces the PEs it
                # is home for; one that names another home speaks for a
                # registrar it is not (RFC 5355 section 2.17).
                self._refuse(conn, self._conns[conn], message,
                             "ADD_PE of PE %08x whose home is %08x" % (param.identifier, home), now)
                return
            result = self._apply(handle, param, now, message.sender_id)
            if result == "defended":
                pe = hs.get(handle, param.identifier)
                self.log.info("PE {id:08x} in {handle!r} claimed by {peer:08x}; we are its "
                              "home: re-announcing", id=pe.pe_id, handle=handle,
                              peer=message.sender_id)
                self._broadcast(pe, ADD_PE)
            self.registrar.reschedule()
        elif message.action == DEL_PE:
            pe = hs.get(handle, param.identifier)
            # Only the PE's home (as we know it) removes it: a late DEL_PE
            # from its previous home must not remove a PE that moved.
            if pe is not None and pe.home_registrar == message.sender_id:
                hs.remove(pe)
        else:
            self._emit(Send(conn, ENRPError(self.server_id, message.sender_id, OperationError.of(
                ErrorCause.INVALID_VALUES, echo(message)))))

    def _broadcast(self, pe, action):
        self._send_all(HandleUpdate(self.server_id, 0, action, pe.handle, wire_pool_element(pe)))

    def _registered(self, pe, outcome):
        # RFC 5353 section 3.3: every change of a PE we are home for.
        if pe.home_registrar == self.server_id:
            self._broadcast(pe, ADD_PE)

    def _removed(self, pe, reason):
        if pe.home_registrar == self.server_id:
            self._broadcast(pe, DEL_PE)

    # -- takeover (RFC 5353 section 3.5) ----------------------------------

    def _unreachable(self, peer, now):
        owned = self.handlespace.owned_count(peer.server_id)
        if peer.takeover_by:
            self._drop_peer(peer, "unreachable; %08x takes it over" % peer.takeover_by)
            return
        if not owned:
            self._drop_peer(peer, "unreachable, owns no PE")
            return
        # RFC 5353 section 3.5.1: Init Takeover to all peers.
        outstanding = {p for p in self.peers if p != peer.server_id}
        self.takeovers["started"] += 1
        self.log.warn("ENRP peer {id:08x} unreachable: taking over its {n} PEs, "
                      "{k} acks to collect", id=peer.server_id, n=owned, k=len(outstanding),
                      registrar="%08x" % peer.server_id, cause="peer unreachable")
        peer.takeover = _Takeover(peer.server_id, outstanding)
        peer.timer = PeerTimer.TAKEOVER_EXPIRY
        peer.deadline = now + self.config.takeover_expiry
        self._send_all(InitTakeover(self.server_id, 0, peer.server_id), exclude=(peer.server_id,))
        if not outstanding:
            self._finish_takeover(peer, now)

    def _takeover_expired(self, peer, now):
        takeover = peer.takeover
        if takeover is None:
            peer.timer = PeerTimer.LAST_HEARD
            peer.deadline = now + self.config.max_time_last_heard
            return
        # Our rule (doc/enrp.rst): acks missing from peers that are silent
        # themselves (not heard for max-time-last-heard) or that we cannot
        # reach are waived; acks missing from live peers abandon the
        # takeover, as in RSPLIB, and it is retried later.
        live = {pid for pid in takeover.outstanding
                if pid in self.peers and self._connection_for(self.peers[pid]) is not None
                and now - self.peers[pid].last_heard < self.config.max_time_last_heard}
        if not live:
            self._finish_takeover(peer, now)
            return
        self.takeovers["expired"] += 1
        self.log.warn("ENRP takeover of {id:08x} expired without acks from {missing}",
                      id=peer.server_id, missing=", ".join("%08x" % p for p in sorted(live)),
                      registrar="%08x" % peer.server_id, cause="takeover expired")
        peer.takeover = None
        peer.timer = PeerTimer.NO_RESPONSE
        peer.deadline = now + self.config.max_time_no_response

    def _init_takeover(self, conn, message, now):
        target = message.target_id
        sender = message.sender_id
        if target == self.server_id:
            # RFC 5353 section 3.5.1: the target is alive and says so.
            self.log.warn("ENRP peer {peer:08x} tries to take us over: sending Presence",
                          peer=sender)
            self._heartbeat()
            self._emit(Send(conn, self._presence_message(sender, False)))
            return
        peer = self.peers.get(target)
        if peer is not None and peer.takeover is not None:
            if sender < self.server_id:
                # RFC 5353 section 3.5.1 as RSPLIB implements it: between
                # competing takeovers the lower server id wins.
                self.log.info("ENRP takeover of {t:08x}: {s:08x} has the lower id, we yield",
                              t=target, s=sender)
                self.takeovers["yielded"] += 1
                peer.takeover = None
                peer.takeover_by = peer.acked_takeover = sender
                peer.timer = PeerTimer.NO_RESPONSE
                peer.deadline = now + self.config.max_time_no_response
                self._emit(Send(conn, InitTakeoverAck(self.server_id, sender, target)))
            else:
                self.log.info("ENRP takeover of {t:08x}: we have the lower id than {s:08x}",
                              t=target, s=sender)
            return
        if peer is not None:
            peer.takeover_by = peer.acked_takeover = sender
        self._emit(Send(conn, InitTakeoverAck(self.server_id, sender, target)))

    def _init_takeover_ack(self, conn, message, now):
        peer = self.peers.get(message.target_id)
        if peer is None or peer.takeover is None:
            return
        peer.takeover.outstanding.discard(message.sender_id)
        if not peer.takeover.outstanding:
            self._finish_takeover(peer, now)

    def _finish_takeover(self, peer, now):
        target = peer.server_id
        # RFC 5353 section 3.5.2: tell everyone, then adopt the PEs.
        self._send_all(TakeoverServer(self.server_id, 0, target), exclude=(target,))
        moved = self.handlespace.takeover(target, self.server_id)
        self.takeovers["done"] += 1
        reached = 0
        for pe in moved:
            conn = self._reach_pe(pe) if self._reach_pe is not None else None
            if self.registrar.adopt(pe, now, conn):
                reached += 1
        self.registrar.reschedule()
        self.log.warn("ENRP takeover of {id:08x} done: {n} PEs adopted, {k} told by "
                      "Endpoint Keep Alive with H", id=target, n=len(moved), k=reached,
                      registrar="%08x" % target, cause="takeover done")
        self._drop_peer(peer, "taken over")
        for observer in self.on_takeover:
            observer(target, self.server_id, moved)

    def _takeover_server(self, conn, message, now):
        target = message.target_id
        if target == self.server_id:
            # Taken over while alive (a partition): keep our PEs; our
            # Presence checksum makes the peer resynchronise them (audit).
            self.log.warn("ENRP peer {peer:08x} took us over: our audits will repair it",
                          peer=message.sender_id)
            self._emit(Send(conn, self._presence_message(message.sender_id, False)))
            return
        peer = self.peers.get(target)
        if peer is not None and peer.acked_takeover != message.sender_id and \
                peer.connections and now - peer.last_heard < self.config.max_time_last_heard:
            # RFC 5353 section 3.5: a Takeover Server follows the Init
            # Takeover every peer acknowledged.  One for a peer we hear and
            # whose takeover we never acknowledged is a peer overreaching
            # (RFC 5355 section 2.17): its PEs stay where they are.
            self._refuse(conn, self._conns[conn], message,
                         "Takeover Server of %08x, which is alive and whose Init Takeover "
                         "we did not acknowledge" % target, now)
            return
        moved = self.handlespace.takeover(target, message.sender_id)
        self.takeovers["by peer"] += 1
        self.registrar.reschedule()
        self.log.info("ENRP peer {new:08x} took over {old:08x} ({n} PEs)",
                      new=message.sender_id, old=target, n=len(moved),
                      registrar="%08x" % target, cause="taken over by %08x" % message.sender_id)
        if peer is not None:
            self._drop_peer(peer, "taken over by %08x" % message.sender_id)
        for observer in self.on_takeover:
            observer(target, message.sender_id, moved)

    def _enrp_error(self, conn, message, now):
        # Never answer an error with an error.  A few causes by name: one
        # message may hold 16,000 (issue #14, log amplification).
        self.log.info("ENRP Error from {id:08x}: {causes}", id=message.sender_id,
                      causes=message.error.summary())
