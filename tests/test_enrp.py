"""
Tests of the ENRP server (RFC 5353), sans I/O: single-server behaviour over
fake connections, and clusters of 3 to 5 registrars joined in memory under
one L{task.Clock} (L{rserpool.enrp.memory}).
"""
import ipaddress

from twisted.internet import task
from twisted.trial import unittest

from rserpool.actions import Dial, Multicast, Schedule, Send
from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig, UserTransport
from rserpool.asap.scope import Scope
from rserpool.codes import ENRPType, ErrorCause
from rserpool.enrp import ENRPConfig, ENRPServer, PeerTimer
from rserpool.enrp.trust import PeerPolicy
from rserpool.enrp.machine import reachable_information
from rserpool.enrp.memory import MemoryNetwork
from rserpool.handlespace import PolicySettings, TimerCode
from rserpool.wire import (
    ADD_PE,
    DEL_PE,
    ENRP,
    ENRPError,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    Policy,
    PoolElement,
    Presence,
    ProtocolError,
    Registration,
    RegistrationResponse,
    ServerInformation,
    TakeoverServer,
    TCPTransport,
    decode,
    encode,
)

from tests.helpers import Driven, FakeConnection

LOOP = ipaddress.ip_address("127.0.0.1")


def info(server_id):
    return ServerInformation(server_id, TCPTransport(9901, (LOOP,)))


def wire_pe(pe_id, home, life=60000):
    return PoolElement(pe_id, home, life, TCPTransport(7000, (ipaddress.ip_address("127.1.0.1"),)),
                       Policy(1, ()), TCPTransport(7001, (ipaddress.ip_address("127.1.0.1"),)))


def put(hs, handle, pe_id, home, now=0.0):
    hs.register(handle, pe_id, home_registrar=home, policy=PolicySettings.from_values(1, ()),
                user_transport=UserTransport(wire_pe(pe_id, home).user_transport), now=now,
                registration_life=60000, timer=(TimerCode.EXPIRY, now + 60),
                asap_transport=wire_pe(pe_id, home).asap_transport)


class ServerTests(unittest.TestCase):
    """
    One ENRP server, fed by hand.
    """

    def setUp(self):
        self.registrar = ASAPRegistrar(RegistrarConfig(server_id=0x50))
        # Registrars on loopback are accepted (--enrp-peer-networks
        # 127.0.0.0/8); tests/test_enrp_trust.py covers who is not.
        self.server = Driven(ENRPServer(self.registrar, ENRPConfig(max_elements_per_ht_request=3),
                                        information=lambda: info(0x50),
                                        policy=PeerPolicy(networks=("127.0.0.0/8",))))
        self.server.start(0.0)
        self.conn = FakeConnection()
        self.server.connection_made(self.conn, 0.0)

    def presence(self, sender, checksum=0xFFFF, reply=False, at=0.0, conn=None):
        self.server.message_received(conn or self.conn, Presence(sender, 0x50, checksum, info(sender),
                                                                 reply), at)

    def test_outgoing_connection_introduces_itself(self):
        """
        Over an outgoing connection (a static peer) the server sends a
        Presence with R at once: the answer tells it the peer's id.
        """
        conn = FakeConnection()
        self.server.connection_made(conn, 0.0, outgoing=True)
        (p,) = conn.of(Presence)
        self.assertTrue(p.reply_required)
        self.assertEqual(p.receiver_id, 0)
        self.assertEqual(p.server_information.server_id, 0x50)

    def test_sends_over_connection_peer_opened(self):
        """
        With a connection each way, messages to the peer go over the one
        it opened to our ENRP endpoint: RSPLIB ignores a Presence over an
        association from another port than its Server Information's.  Our
        unanswered outgoing connection to the endpoint a Presence names is
        tied to that peer (no more Presence with R over it).
        """
        dialled = FakeConnection()
        dialled.peer = (LOOP, 9901)
        self.server.connection_made(dialled, 0.0, outgoing=True)
        self.presence(0x60)
        dialled.sent, self.conn.sent = [], []
        self.server.timer_fired(3.0)  # heartbeat
        self.assertEqual([p.reply_required for p in self.conn.of(Presence)], [False])
        self.assertEqual(dialled.of(Presence), [])
        self.assertIn(dialled, self.server.peers[0x60].connections)

    def test_list_response_names_connected_peers(self):
        """
        A peer that sent a Presence and left (RSPLIB's hsdump) is not
        passed on in a List Response.
        """
        gone = FakeConnection()
        self.server.connection_made(gone, 0.0)
        self.presence(0x61, conn=gone)
        self.server.connection_lost(gone, 0.0)
        self.presence(0x60)
        self.server.message_received(self.conn, ListRequest(0x60, 0x50), 0.1)
        (response,) = self.conn.of(ListResponse)
        self.assertEqual([s.server_id for s in response.servers], [0x50])

    def test_wildcard_peer_listed_by_its_address(self):
        """
        A peer whose ENRP endpoint listens on the wildcard address (its
        Presence names 0.0.0.0) is listed with the address its connection
        comes from: the receiver of the List Response would otherwise dial
        its own ENRP endpoint.
        """
        self.server.policy = PeerPolicy(networks=("127.0.0.0/8", "192.0.2.0/24"))
        there = FakeConnection()
        there.peer_addresses = (ipaddress.ip_address("192.0.2.7"),)
        self.server.connection_made(there, 0.0)
        wildcard = ServerInformation(0x61, TCPTransport(9901, (ipaddress.ip_address("0.0.0.0"),)))
        self.server.message_received(there, Presence(0x61, 0x50, 0xFFFF, wildcard, False), 0.0)
        self.presence(0x60)
        self.server.message_received(self.conn, ListRequest(0x60, 0x50), 0.1)
        (response,) = self.conn.of(ListResponse)
        listed = {s.server_id: s.transport for s in response.servers}
        self.assertEqual(listed[0x61], TCPTransport(9901, (ipaddress.ip_address("192.0.2.7"),)))
        self.assertEqual(sorted(listed), [0x50, 0x61])

    def test_reachable_information(self):
        """
        Only unspecified addresses are replaced, without repeats; with no
        connection addresses the information stays as it is.
        """
        a = ipaddress.ip_address
        both = ServerInformation(1, TCPTransport(9901, (a("::"), a("192.0.2.1"))))
        self.assertEqual(reachable_information(both, (a("192.0.2.1"), a("2001:db8::1"))).transport,
                         TCPTransport(9901, (a("192.0.2.1"), a("2001:db8::1"))))
        self.assertIs(reachable_information(both, ()), both)
        self.assertEqual(reachable_information(info(2), (a("192.0.2.1"),)), info(2))

    def test_first_peer_is_mentor(self):
        """
        RFC 5353 section 3.2: the first peer heard at startup is the mentor:
        List Request and a Handle Table Request without W.
        """
        self.presence(0x60)
        self.assertEqual(self.server.mentor, 0x60)
        self.assertEqual(len(self.conn.of(ListRequest)), 1)
        (htr,) = self.conn.of(HandleTableRequest)
        self.assertFalse(htr.own_children_only)
        self.assertFalse(self.server.ready)
        self.server.message_received(self.conn, HandleTableResponse(
            0x60, 0x50, [], more_to_send=False), 0.1)
        self.assertTrue(self.server.ready)

    def test_mentor_discovery_timeout(self):
        """
        Without a mentor within the mentor discovery timeout the server
        starts alone.
        """
        ready = []
        self.server.on_ready.append(ready.append)
        self.server.timer_fired(4.9)
        self.assertFalse(self.server.ready)
        self.server.timer_fired(5.0)
        self.assertEqual(ready, [False])

    def test_presence_reply_required(self):
        """
        A Presence with R is answered with a Presence without R.
        """
        self.presence(0x60, reply=True)
        answers = [p for p in self.conn.of(Presence) if p.receiver_id == 0x60]
        self.assertEqual([p.reply_required for p in answers], [False])

    def test_silent_peer_probed_then_unreachable(self):
        """
        RFC 5353 section 3.4.3: a peer silent for max-time-last-heard is sent
        a Presence with R; silent for max-time-no-response more, it is
        unreachable (owning nothing, it is removed).
        """
        self.server.timer_fired(5.0)  # leave startup
        self.presence(0x60, at=5.0)
        self.conn.sent.clear()
        self.server.timer_fired(9.9)
        self.assertEqual([p for p in self.conn.of(Presence) if p.reply_required], [])
        self.server.timer_fired(10.0)
        probes = [p for p in self.conn.of(Presence) if p.reply_required]
        self.assertEqual([(p.receiver_id, p.reply_required) for p in probes], [(0x60, True)])
        self.assertIs(self.server.peers[0x60].timer, PeerTimer.NO_RESPONSE)
        self.server.timer_fired(15.0)
        self.assertNotIn(0x60, self.server.peers)

    def test_handle_table_pages(self):
        """
        RFC 5353 section 3.2.3: a Handle Table Response carries at most
        max-elements-per-ht-request PEs and the M flag while more remain; W
        asks for the responder's own PEs only.
        """
        hs = self.registrar.handlespace
        for i in range(1, 8):
            put(hs, b"P%d" % (i % 2), i, 0x50 if i != 7 else 0x99)
        pages = []
        for _ in range(10):
            self.server.message_received(self.conn, HandleTableRequest(0x77, 0), 0.0)
            pages.append(self.conn.sent[-1])
            if not pages[-1].more_to_send:
                break
        self.assertEqual([sum(len(e.pool_elements) for e in p.entries) for p in pages], [3, 3, 1])
        self.assertEqual([p.more_to_send for p in pages], [True, True, False])
        ids = sorted(pe.identifier for p in pages for e in p.entries for pe in e.pool_elements)
        self.assertEqual(ids, list(range(1, 8)))
        self.assertIsNotNone(pages[0].entries[0].pool_elements[0].asap_transport)
        self.server.message_received(self.conn, HandleTableRequest(0x77, 0, True), 0.0)
        self.server.message_received(self.conn, HandleTableRequest(0x77, 0, True), 0.0)
        owned = self.conn.sent[-2:]
        ids = sorted(pe.identifier for p in owned for e in p.entries for pe in e.pool_elements)
        self.assertEqual(ids, [1, 2, 3, 4, 5, 6])

    def test_non_peer_is_answered(self):
        """
        A non-peer (``rserpool dump``, RSPLIB's hsdump) gets List and Handle
        Table Responses.
        """
        put(self.registrar.handlespace, b"P", 1, 0x50)
        self.server.message_received(self.conn, ListRequest(0x77, 0), 0.0)
        (lr,) = self.conn.of(ListResponse)
        self.assertFalse(lr.reject)
        self.assertEqual([s.server_id for s in lr.servers], [0x50])
        self.server.message_received(self.conn, HandleTableRequest(0x77, 0x50), 0.0)
        (ht,) = self.conn.of(HandleTableResponse)
        self.assertFalse(ht.reject)
        self.assertEqual(ht.entries[0].pool_elements[0].identifier, 1)

    def test_misaddressed_requests_rejected(self):
        """
        Requests addressed to another server id are rejected with the R
        flag.
        """
        self.server.message_received(self.conn, ListRequest(0x77, 0x1234), 0.0)
        self.server.message_received(self.conn, HandleTableRequest(0x77, 0x1234), 0.0)
        self.assertTrue(self.conn.of(ListResponse)[0].reject)
        self.assertTrue(self.conn.of(HandleTableResponse)[0].reject)

    def test_protocol_error_answered(self):
        """
        RFC 5353 section 3.7: an undecodable message is answered with an
        ENRP Error with the codec's cause.
        """
        error = ProtocolError(ErrorCause.UNRECOGNIZED_MESSAGE, "type 0x7f", b"\x7f\0\0\x04")
        self.server.protocol_error(self.conn, error, 0.0)
        (e,) = self.conn.of(ENRPError)
        self.assertEqual(e.error.causes[0].code, ErrorCause.UNRECOGNIZED_MESSAGE)
        self.assertEqual(e.error.causes[0].info, b"\x7f\0\0\x04")
        self.server.protocol_error(self.conn, ProtocolError(
            ErrorCause.UNRECOGNIZED_PARAMETER, "silent", b"", report=False), 0.0)
        self.assertEqual(len(self.conn.of(ENRPError)), 1)

    def test_unknown_message_type(self):
        """
        Bytes of an unknown ENRP type decode to a L{ProtocolError} that the
        server answers with Unrecognized Message.
        """
        data = b"\x42\x00\x00\x0c" + b"\0\0\0\x60" + b"\0\0\0\x50"
        try:
            decode(data, ENRP)
        except ProtocolError as e:
            self.server.protocol_error(self.conn, e, 0.0)
        (e,) = self.conn.of(ENRPError)
        self.assertEqual(e.error.causes[0].code, ErrorCause.UNRECOGNIZED_MESSAGE)

    def test_unrecognized_parameter_reported(self):
        """
        Parameters marked "skip and report" are reported in an ENRP Error.
        """
        data = encode(ListRequest(0x60, 0x50))
        tlv = b"\xc0\x99\x00\x08abcd"
        data = data[:2] + (len(data) + len(tlv)).to_bytes(2, "big") + data[4:] + tlv
        message = decode(data, ENRP)
        self.server.message_received(self.conn, message, 0.0)
        (e,) = self.conn.of(ENRPError)
        self.assertEqual(e.error.causes[0].code, ErrorCause.UNRECOGNIZED_PARAMETER)

    def test_handle_update_del_only_from_home(self):
        """
        A DEL_PE from a registrar that is not the PE's home (as we know it)
        does not remove it: a late DEL_PE from a previous home must not
        remove a PE that moved.
        """
        hs = self.registrar.handlespace
        other = FakeConnection()
        self.presence(0x60)
        self.presence(0x61, conn=other)
        self.server.message_received(self.conn, HandleUpdate(0x60, 0x50, ADD_PE, b"P",
                                                             wire_pe(9, 0x60)), 0.0)
        self.assertEqual(hs.get(b"P", 9).home_registrar, 0x60)
        self.server.message_received(other, HandleUpdate(0x61, 0x50, DEL_PE, b"P",
                                                         wire_pe(9, 0x61)), 0.0)
        self.assertIsNotNone(hs.get(b"P", 9))
        self.server.message_received(self.conn, HandleUpdate(0x60, 0x50, DEL_PE, b"P",
                                                             wire_pe(9, 0x60)), 0.0)
        self.assertIsNone(hs.get(b"P", 9))

    def test_handle_update_naming_us_skipped(self):
        """
        A PE whose home is this server, from a peer, is skipped (RSPLIB).
        """
        self.presence(0x60)
        self.server.message_received(self.conn, HandleUpdate(0x60, 0x50, ADD_PE, b"P",
                                                             wire_pe(9, 0x50)), 0.0)
        self.assertIsNone(self.registrar.handlespace.get(b"P", 9))

    def test_audit_mismatch_requests_owned(self):
        """
        RFC 5353 section 3.6.1: a Presence whose checksum differs from that
        of the PEs we hold for the sender triggers a Handle Table Request
        with W; PEs the sender no longer lists are purged.
        """
        self.server.timer_fired(5.0)
        hs = self.registrar.handlespace
        put(hs, b"P", 1, 0x60)
        put(hs, b"P", 2, 0x60)
        self.presence(0x60, checksum=0x1234, at=5.0)
        (htr,) = self.conn.of(HandleTableRequest)
        self.assertTrue(htr.own_children_only)
        self.server.message_received(self.conn, HandleTableResponse(
            0x60, 0x50, [HandleTableEntry(b"P", [wire_pe(1, 0x60), wire_pe(3, 0x60)])]), 5.1)
        self.assertEqual(sorted(pe.pe_id for pe in hs.owned_by(0x60)), [1, 3])

    def test_target_defends_itself(self):
        """
        RFC 5353 section 3.5.1: the target of an Init Takeover that is
        alive sends Presence to all peers, and acks nothing.
        """
        other = FakeConnection()
        self.presence(0x60)
        self.presence(0x61, conn=other)
        self.conn.sent.clear()
        other.sent.clear()
        self.server.message_received(self.conn, InitTakeover(0x60, 0x50, 0x50), 1.0)
        self.assertEqual(self.conn.of(InitTakeoverAck), [])
        self.assertTrue(self.conn.of(Presence))
        self.assertTrue(other.of(Presence))

    def start_takeover(self, target=0x70, peers=(0x30, 0x90)):
        """
        Make the server see C{target} die while it owns a PE, with peers.
        """
        self.server.timer_fired(5.0)
        conns = {}
        for pid in (target,) + tuple(peers):
            conns[pid] = FakeConnection()
            self.presence(pid, conn=conns[pid], at=5.0)
        put(self.registrar.handlespace, b"P", 1, target)
        for t in (9.0, 10.0, 11.0):
            for pid in peers:
                self.presence(pid, conn=conns[pid], at=t)
            self.server.timer_fired(t)
        self.server.timer_fired(15.0)
        for pid in peers:
            self.presence(pid, conn=conns[pid], at=15.0)
        return conns

    def test_takeover_initiated(self):
        """
        RFC 5353 section 3.5.1: an unreachable peer that owns PEs is taken
        over: Init Takeover to every other peer; with all acks, Takeover
        Server and adoption.
        """
        conns = self.start_takeover()
        self.assertEqual(len(conns[0x30].of(InitTakeover)), 1)
        self.assertEqual(conns[0x70].of(InitTakeover), [])
        self.server.message_received(conns[0x30], InitTakeoverAck(0x30, 0x50, 0x70), 15.1)
        self.assertEqual(conns[0x30].of(TakeoverServer), [])
        self.server.message_received(conns[0x90], InitTakeoverAck(0x90, 0x50, 0x70), 15.1)
        self.assertEqual([m.target_id for m in conns[0x30].of(TakeoverServer)], [0x70])
        self.assertEqual(self.registrar.handlespace.get(b"P", 1).home_registrar, 0x50)
        self.assertNotIn(0x70, self.server.peers)

    def test_competing_takeover_lower_id_wins(self):
        """
        RFC 5353 section 3.5.1, as RSPLIB implements it: a server taking
        over a target that gets an Init Takeover for the same target from a
        lower id yields and acks; from a higher id it goes on, without ack.
        """
        conns = self.start_takeover()
        self.server.message_received(conns[0x90], InitTakeover(0x90, 0x50, 0x70), 15.1)
        self.assertEqual(conns[0x90].of(InitTakeoverAck), [])
        self.assertIsNotNone(self.server.peers[0x70].takeover)
        self.server.message_received(conns[0x30], InitTakeover(0x30, 0x50, 0x70), 15.2)
        (ack,) = conns[0x30].of(InitTakeoverAck)
        self.assertEqual(ack.target_id, 0x70)
        self.assertIsNone(self.server.peers[0x70].takeover)
        self.server.message_received(conns[0x30], TakeoverServer(0x30, 0x50, 0x70), 15.3)
        self.assertEqual(self.registrar.handlespace.get(b"P", 1).home_registrar, 0x30)

    def test_takeover_abandoned_when_target_speaks(self):
        """
        A Presence from the target stops our takeover of it.
        """
        conns = self.start_takeover()
        self.presence(0x70, conn=conns[0x70], at=15.2)
        self.assertIsNone(self.server.peers[0x70].takeover)
        self.server.message_received(conns[0x30], InitTakeoverAck(0x30, 0x50, 0x70), 15.3)
        self.server.message_received(conns[0x90], InitTakeoverAck(0x90, 0x50, 0x70), 15.3)
        self.assertEqual(self.registrar.handlespace.get(b"P", 1).home_registrar, 0x70)

    def test_takeover_expiry_waives_silent_peers(self):
        """
        At takeover expiry, acks missing from peers that are silent
        themselves are waived and the takeover completes.
        """
        conns = self.start_takeover()
        self.server.message_received(conns[0x30], InitTakeoverAck(0x30, 0x50, 0x70), 15.1)
        for t in (16.0, 18.0, 20.0):
            self.presence(0x30, conn=conns[0x30], at=t)
            self.server.timer_fired(t)
        self.assertEqual(self.registrar.handlespace.get(b"P", 1).home_registrar, 0x50)

    def test_takeover_expiry_with_live_peer_missing_abandons(self):
        """
        At takeover expiry, an ack missing from a live peer abandons the
        takeover (as RSPLIB) until the next attempt.
        """
        conns = self.start_takeover()
        for t in (16.0, 18.0, 20.0):
            for pid in (0x30, 0x90):
                self.presence(pid, conn=conns[pid], at=t)
            self.server.timer_fired(t)
        self.assertEqual(self.registrar.handlespace.get(b"P", 1).home_registrar, 0x70)
        self.assertIsNone(self.server.peers[0x70].takeover)


def cluster(n=3, pes=30, hunt=True, pes_reachable=True, enrp=None, mesh=True):
    """
    A cluster of C{n} registrars (ids 1..n; each lists the lower ids as
    static peers, or only id 1 unless C{mesh}), with C{pes} PEs spread
    over them.
    """
    clock = task.Clock()
    net = MemoryNetwork(clock, pes_reachable=pes_reachable)
    for i in range(1, n + 1):
        peers = list(range(1, i)) if mesh else ([1] if i > 1 else [])
        net.add_registrar(i, peers=peers, enrp=enrp)
    net.run(1.0)
    for k in range(pes):
        pe = net.add_pe(1000 + k, handle=b"pool%d" % (k % 3), hunt=hunt)
        pe.register(net.registrars[1 + k % n])
    net.run(1.0)
    return net


def views(net):
    return [r.owners() for r in net.live()]


class ActionTests(unittest.TestCase):
    """
    The ENRP server returns what to do (issue #15, one machine style): no
    fake connection is written to here, the actions are the answer.
    """

    def setUp(self):
        self.registrar = ASAPRegistrar(
            RegistrarConfig(server_id=0x50, min_address_scope=Scope.LOOPBACK))
        self.server = ENRPServer(self.registrar, ENRPConfig(), information=lambda: info(0x50),
                                 policy=PeerPolicy(networks=("127.0.0.0/8",)), multicast=True)

    def test_start(self):
        """
        Starting asks for a wake-up at once (the first heartbeat).
        """
        self.assertEqual(self.server.start(0.0), [Schedule(self.server, 0.0)])

    def test_heartbeat_multicast(self):
        """
        With multicast on, the heartbeat returns a Presence to multicast.
        """
        self.server.start(0.0)
        actions = self.server.timer_fired(0.0)
        (multicast,) = [a for a in actions if type(a) is Multicast]
        self.assertIsInstance(decode(multicast.data, ENRP), Presence)
        self.assertIs(type(actions[-1]), Schedule)

    def test_outgoing_connection(self):
        """
        An outgoing connection returns a Presence with R to send over it.
        """
        conn = FakeConnection()
        (send,) = self.server.connection_made(conn, 0.0, outgoing=True)
        self.assertIs(send.connection, conn)
        self.assertTrue(send.message.reply_required)
        self.assertEqual(conn.sent, [])

    def test_list_response_dials(self):
        """
        Registrars named in a peer's List Response are dialled: a L{Dial}
        each.
        """
        self.server.start(0.0)
        conn = FakeConnection()
        self.server.connection_made(conn, 0.0)
        self.server.message_received(conn, Presence(0x60, 0x50, 0xFFFF, info(0x60)), 0.0)
        actions = self.server.message_received(
            conn, ListResponse(0x60, 0x50, [info(0x60), info(0x61)]), 0.1)
        self.assertEqual([a for a in actions if type(a) is Dial], [Dial(info(0x61))])

    def test_registration_returns_handle_updates(self):
        """
        The servers share one outbox: an ASAP registration returns the
        Registration Response and the ENRP Handle Update to each peer.
        """
        self.server.start(0.0)
        peer = FakeConnection()
        self.server.connection_made(peer, 0.0)
        self.server.message_received(peer, Presence(0x60, 0x50, 0xFFFF, info(0x60)), 0.0)
        pe = FakeConnection()
        pe.peer_addresses = (ipaddress.ip_address("127.1.0.1"),)
        pe.peer_transport = wire_pe(7, 0).asap_transport
        pe.rtt = lambda: 0.0
        self.registrar.connection_made(pe, 0.0)
        actions = self.registrar.message_received(
            pe, Registration(b"P", PoolElement(7, 0, 60000, wire_pe(7, 0).user_transport,
                                               Policy(1, ()))), 0.5)
        sends = [a for a in actions if type(a) is Send]
        self.assertEqual([a.connection for a in sends], [pe, peer])
        self.assertIsInstance(sends[0].message, RegistrationResponse)
        update = decode(sends[1].message, ENRP)
        self.assertEqual((update.action, update.receiver_id, update.pool_element.identifier),
                         (ADD_PE, 0x60, 7))
        self.assertIn(Schedule(self.registrar, 5.5), actions)


class ClusterTests(unittest.TestCase):
    """
    Registrars joined in memory under one clock, driving every procedure.
    """

    def assertConsistent(self, net, count):
        first, *rest = views(net)
        self.assertEqual(len(first), count)
        for other in rest:
            self.assertEqual(other, first)
        live = {r.server_id for r in net.live()}
        self.assertTrue(set(first.values()) <= live, (set(first.values()), live))
        for r in net.live():
            self.assertTrue(r.handlespace.verify() in (None, True))

    def test_peer_discovery_through_mentor_list(self):
        """
        Registrars that list only registrar 1 learn each other from its
        List Response and peer with each other.
        """
        net = cluster(n=4, pes=0, mesh=False)
        net.run(3.0)
        for r in net.live():
            self.assertEqual(sorted(r.enrp.peers), sorted({1, 2, 3, 4} - {r.server_id}))

    def test_handle_updates(self):
        """
        RFC 5353 section 3.3: every registration reaches every registrar;
        deregistration (here: the PE's connection closing) too.
        """
        net = cluster(n=3, pes=30)
        self.assertConsistent(net, 30)
        for r in net.live():
            self.assertEqual(set(r.owners().values()), {1, 2, 3})
        net.pes[0].kill()
        net.pes[1].kill()
        net.run(0.5)
        self.assertConsistent(net, 28)

    def test_startup_sync_in_pages(self):
        """
        RFC 5353 section 3.2.3: a new registrar downloads the handlespace
        from its mentor, M flag paging at max-elements-per-ht-request.
        """
        net = cluster(n=3, pes=300, enrp=ENRPConfig(max_elements_per_ht_request=128))
        newcomer = net.add_registrar(9, peers=[2])
        net.run(2.0)
        self.assertTrue(newcomer.enrp.ready)
        self.assertEqual(newcomer.enrp.mentor, 2)
        # 300 PEs: two pages with M, then the last one (audits by W-flagged
        # requests may add more final pages).
        self.assertEqual(net.sent[(2, ENRPType.HANDLE_TABLE_RESPONSE, 0x02)], 2)
        self.assertGreaterEqual(net.sent[(2, ENRPType.HANDLE_TABLE_RESPONSE, 0x00)], 1)
        self.assertConsistent(net, 300)

    def test_audit_repairs_corruption(self):
        """
        RFC 5353 section 3.6.1/3.6.2: a registrar whose view of a peer's PEs
        is corrupted (one missing, one invented, one with a wrong owner)
        repairs it after the peer's next Presence.
        """
        net = cluster(n=3, pes=30)
        victim = net.registrars[3]
        hs = victim.handlespace
        owned_by_1 = hs.owned_by(1)
        hs.remove(owned_by_1[0])
        put(hs, b"pool0", 4242, 1, now=net.clock.seconds())
        hs.set_owner(owned_by_1[1], 2)
        self.assertNotEqual(victim.owners(), net.registrars[1].owners())
        net.run(6.0)
        self.assertConsistent(net, 30)
        self.assertGreaterEqual(net.sent.get((3, ENRPType.HANDLE_TABLE_REQUEST, 0x01), 0), 1)

    def test_takeover_with_keep_alive_h(self):
        """
        RFC 5353 section 3.5: a registrar is killed; its PEs (which do not
        hunt, as RSPLIB PEs wait for their new home) are taken over by a
        survivor within detection plus takeover time, and each gets an
        Endpoint Keep Alive with H from its new home.
        """
        net = cluster(n=4, pes=40, hunt=False)
        victim = net.registrars[4]
        moved = [pe for pe in net.pes if pe.home == 4]
        self.assertEqual(len(moved), 10)
        victim.crash()
        t0 = net.clock.seconds()
        config = ENRPConfig()
        bound = config.max_time_last_heard + config.max_time_no_response + \
            config.takeover_expiry + config.heartbeat_cycle * 1.125
        for _ in range(int(bound * 10)):
            net.run(0.1)
            if all(set(v.values()) <= {1, 2, 3} for v in views(net)):
                break
        self.assertLess(net.clock.seconds() - t0, bound)
        self.assertConsistent(net, 40)
        self.assertEqual({pe.keep_alives_h for pe in moved}, {1})
        self.assertEqual(len({pe.home for pe in moved}), 1)
        net.run(12.0)  # keep-alives to the adopted PEs go on; nothing lost
        self.assertConsistent(net, 40)

    def test_takeover_over_tcp_mapping(self):
        """
        Over the TCP mapping a registrar cannot reach an adopted PE: the
        takeover moves ownership everywhere, no keep-alive timeout removes
        the PE; it lives on its registration life.
        """
        net = cluster(n=3, pes=30, hunt=False, pes_reachable=False)
        net.registrars[3].crash()
        net.run(20.0)
        self.assertConsistent(net, 30)
        self.assertEqual(sum(pe.keep_alives_h for pe in net.pes), 0)
        winner = net.registrars[1]
        adopted = [pe for pe in winner.handlespace.owned_by(1) if pe.connection is None]
        self.assertEqual(len(adopted), 10)
        self.assertEqual({pe.timer_code for pe in adopted}, {TimerCode.EXPIRY})

    def test_hunting_pes_move_before_takeover(self):
        """
        PEs that re-register at a live registrar when theirs dies are
        announced by their new home; nothing is left to take over.
        """
        net = cluster(n=3, pes=30, hunt=True)
        net.registrars[2].crash()
        net.run(20.0)
        self.assertConsistent(net, 30)
        self.assertEqual(set(views(net)[0].values()), {1, 3})

    def test_competing_takeovers(self):
        """
        Survivors that detect the failure in the same instant both start a
        takeover; the lower id wins (RFC 5353 section 3.5.1 as RSPLIB
        implements it) and one Takeover Server is sent.
        """
        enrp = ENRPConfig(heartbeat_cycle=1.0)
        net = cluster(n=5, pes=50, hunt=False, enrp=enrp)
        for r in net.live():
            r.enrp.rng.uniform = lambda a, b: 1.0  # no jitter: lockstep
        net.run(3.0)
        net.registrars[5].crash()
        net.run(15.0)
        started = {sid for (sid, mtype, _), n in net.sent.items()
                   if mtype == ENRPType.INIT_TAKEOVER}
        self.assertGreater(len(started), 1)
        servers = [(sid, n) for (sid, mtype, _), n in net.sent.items()
                   if mtype == ENRPType.TAKEOVER_SERVER]
        self.assertEqual(servers, [(min(started), 3)])
        self.assertConsistent(net, 50)
        self.assertEqual(len(net.registrars[min(started)].handlespace.owned_by(min(started))), 20)

    def test_partition_heals(self):
        """
        A partition {1, 2} | {3}: each side takes over the other's PEs; once
        it heals, every PE is owned by the registrar it is registered with,
        everywhere (audits and re-announcement by the live home).
        """
        net = cluster(n=3, pes=30, hunt=False, pes_reachable=False)
        truth = dict(views(net)[0])
        net.partition({1, 2}, {3})
        net.run(20.0)
        self.assertEqual(set(net.registrars[3].owners().values()), {3})
        self.assertEqual(set(net.registrars[1].owners().values()), {1, 2})
        net.heal()
        net.run(15.0)
        self.assertConsistent(net, 30)
        self.assertEqual(views(net)[0], truth)

    def test_restarted_registrar_rejoins(self):
        """
        A registrar killed and restarted with the same id rejoins: it
        downloads the handlespace from a mentor, and its stale PEs are gone
        everywhere (they re-registered elsewhere).
        """
        net = cluster(n=3, pes=30, hunt=True)
        net.registrars[3].crash()
        net.run(2.0)
        del net.registrars[3]
        again = net.add_registrar(3, peers=[1, 2])
        net.run(3.0)
        self.assertTrue(again.enrp.ready)
        self.assertConsistent(net, 30)
        pe = net.add_pe(77, handle=b"pool0")
        pe.register(again)
        net.run(1.0)
        self.assertConsistent(net, 31)
        self.assertEqual(net.registrars[1].owners()[(b"pool0", 77)], 3)

    def test_restart_before_detection(self):
        """
        A registrar that restarts before its peers notice it died: its old
        PEs that did not hunt are purged by audit (its checksum says it owns
        nothing), not kept forever.
        """
        net = cluster(n=3, pes=30, hunt=False)
        net.registrars[3].crash()
        for pe in net.pes:
            if pe.home == 3:
                pe.kill()
        del net.registrars[3]
        net.add_registrar(3, peers=[1, 2])
        net.run(8.0)
        self.assertConsistent(net, 20)

    def test_bytes_per_update(self):
        """
        A Handle Update for a TCP PE costs the same bytes to every peer.
        """
        net = cluster(n=3, pes=0)
        before = net.enrp_bytes, net.sent.get((1, ENRPType.HANDLE_UPDATE, 0), 0)
        pe = net.add_pe(5, handle=b"pool0")
        pe.register(net.registrars[1])
        net.run(0.05)
        self.assertEqual(net.sent[(1, ENRPType.HANDLE_UPDATE, 0)] - before[1], 2)
        self.assertEqual(net.enrp_bytes - before[0], 2 * len(encode(HandleUpdate(
            1, 2, ADD_PE, b"pool0", wire_pe(5, 1)))))


class EndpointStringTests(unittest.TestCase):
    """
    How peers given on the command line or learned from peers are dialled.
    """

    def test_peer_endpoint(self):
        from rserpool.services import peer_endpoint

        self.assertEqual(peer_endpoint("127.0.0.1:9901"), "tcp:host=127.0.0.1:port=9901")
        self.assertEqual(peer_endpoint("[::1]:9901"), "tcp:host=\\:\\:1:port=9901")
        self.assertEqual(peer_endpoint("tcp:127.0.0.1:9901"), "tcp:127.0.0.1:9901")
        self.assertEqual(peer_endpoint("sctp:host=127.0.0.1:port=9901:ppid=12"),
                         "sctp:host=127.0.0.1:port=9901:ppid=12")

    def test_transport_endpoint(self):
        from rserpool.services import transport_endpoint
        from rserpool.wire import SCTPTransport

        self.assertEqual(transport_endpoint(TCPTransport(9901, (LOOP,))),
                         "tcp:host=127.0.0.1:port=9901")
        self.assertEqual(transport_endpoint(TCPTransport(9902, (ipaddress.ip_address("::1"),))),
                         "tcp:host=\\:\\:1:port=9902")
        self.assertEqual(transport_endpoint(SCTPTransport(9901, (LOOP,))),
                         "sctp:host=127.0.0.1:port=9901:ppid=12")
