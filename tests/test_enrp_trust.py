"""
ENRP from strangers (issue #14; RFC 5355 sections 2.5, 2.11, 2.17): who may
become a registrar's peer, what a peer id is bound to, who may read the
handlespace, and that a table dump holds no copy of it.  Each test is named
after the RFC 5355 section of the threat it checks and fails without its
mitigation.

Sans-I/O tests drive one L{ENRPServer} over fake connections (addresses
are only labels there); the end-to-end ones run L{RegistrarService} on
loopback TCP with raw clients.
"""
import ipaddress
import tracemalloc

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial import unittest

from rserpool import tap
from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig
from rserpool.codes import ErrorCause, PolicyType
from rserpool.enrp import ENRPConfig, ENRPServer
from rserpool.enrp.trust import PeerPolicy, endpoint_addresses, parse_networks
from rserpool.services import RegistrarService, host_networks, make_config
from rserpool.wire import (
    ADD_PE,
    DEL_PE,
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
    Registration,
    RegistrationResponse,
    ServerInformation,
    TakeoverServer,
    TCPTransport,
)
from tests.helpers import Driven, eventually, free_port, tap_registrar
from tests.helpers import FakeConnection
from tests.test_enrp import put, wire_pe
from tests.test_psk import KEY_1, KEY_2, KEYS, escape, write_keys
from tests.test_registrar_integration import RawClient

OURS = 0x50
A = ipaddress.ip_address


def info(server_id, address="127.0.0.1", port=9901):
    return ServerInformation(server_id, TCPTransport(port, (A(address),)))


def at(address, identity=None, local=None):
    """
    A fake connection from C{address}.
    """
    conn = FakeConnection()
    conn.peer_addresses = (A(address),)
    conn.peer = (A(address), 40000)
    conn.identity = identity
    if local is not None:
        conn.local_addresses = (A(local),)
    return conn


def rejections(conn):
    return [e for e in conn.of(ENRPError)
            if [c.code for c in e.error.causes] ==
            [ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS]]


class Server:
    """
    One ENRP server (id 0x50) with a policy, fed by hand.
    """

    def __init__(self, policy=None, elements=128):
        self.registrar = ASAPRegistrar(RegistrarConfig(server_id=OURS))
        self.server = Driven(ENRPServer(
            self.registrar, ENRPConfig(max_elements_per_ht_request=elements),
            information=lambda: info(OURS), policy=policy))
        self.dialled = self.server.dialled
        self.server.start(0.0)
        self.hs = self.registrar.handlespace

    def connect(self, conn, outgoing=False, now=0.0):
        self.server.connection_made(conn, now, outgoing)
        return conn

    def send(self, conn, message, now=0.0):
        self.server.message_received(conn, message, now)

    def presence(self, conn, sender, now=0.0, information=None, checksum=0xFFFF):
        self.send(conn, Presence(sender, OURS, checksum, information or info(sender)), now)


class StrangerTests(unittest.TestCase):
    """
    RFC 5355 section 2.5: a malicious ENRP server must not join.  With the
    default policy nobody is admitted but over connections we open, over
    TLS-PSK, or from a static peer's address, one a peer named, or the
    accepted networks.
    """

    def setUp(self):
        self.s = Server(PeerPolicy(static=["127.0.0.2"]))

    def test_rfc5355_2_5_stranger_handle_update_refused(self):
        """
        A Handle Update over a connection that sent no admitted Presence
        changes nothing, not even with a life of 0 (which never expires),
        and is answered with Rejection due to Security Considerations.
        """
        conn = self.s.connect(at("127.0.0.66"))
        self.s.send(conn, HandleUpdate(0x66, 0, ADD_PE, b"P", wire_pe(7, 0x66, life=0)))
        self.assertEqual(len(self.s.hs), 0)
        self.assertEqual(len(rejections(conn)), 1)
        self.assertEqual(self.s.server.refused["HandleUpdate"], 1)

    def test_rfc5355_2_5_stranger_presence_refused(self):
        """
        A Presence from an address that is neither a static peer's, nor
        one a peer named, nor in the accepted networks makes no peer and
        no mentor; what follows it is refused too.
        """
        conn = self.s.connect(at("127.0.0.66"))
        self.s.presence(conn, 0x66)
        self.assertNotIn(0x66, self.s.server.peers)
        self.assertEqual(self.s.server.mentor, 0)
        self.assertEqual(conn.of(ListRequest), [])
        self.s.send(conn, HandleUpdate(0x66, 0, ADD_PE, b"P", wire_pe(7, 0x66)))
        self.assertEqual(len(self.s.hs), 0)
        self.assertEqual(len(rejections(conn)), 2)

    def test_rfc5355_2_5_static_peer_admitted(self):
        """
        A registrar connecting from a static peer's address is admitted by
        its Presence; its Handle Updates are applied.
        """
        conn = self.s.connect(at("127.0.0.2"))
        self.s.presence(conn, 0x62)
        self.assertIn(0x62, self.s.server.peers)
        self.s.send(conn, HandleUpdate(0x62, 0, ADD_PE, b"P", wire_pe(7, 0x62)))
        self.assertEqual(self.s.hs.get(b"P", 7).home_registrar, 0x62)
        self.assertEqual(rejections(conn), [])

    def test_rfc5355_2_5_outgoing_connection_admitted(self):
        """
        Whoever answers over a connection we opened is admitted: we chose
        the address (a static peer, or one a peer named).
        """
        conn = self.s.connect(at("127.0.0.77"), outgoing=True)
        self.s.presence(conn, 0x77)
        self.assertIn(0x77, self.s.server.peers)

    def test_rfc5355_2_5_peer_named_by_a_peer(self):
        """
        A peer's List Response names registrars: they are dialled, and
        admitted from the addresses named; a List Response from a stranger
        makes us dial nobody.
        """
        stranger = self.s.connect(at("127.0.0.66"))
        self.s.send(stranger, ListResponse(0x66, OURS, [info(0x99, "127.0.0.99")]))
        self.assertEqual(self.s.dialled, [])
        mentor = self.s.connect(at("127.0.0.2"))
        self.s.presence(mentor, 0x62)
        self.s.send(mentor, ListResponse(0x62, OURS, [info(0x63, "127.0.0.3")]))
        self.assertEqual([i.server_id for i in self.s.dialled], [0x63])
        elsewhere = self.s.connect(at("127.0.0.4"))
        self.s.presence(elsewhere, 0x63)
        self.assertEqual(len(rejections(elsewhere)), 1)
        there = self.s.connect(at("127.0.0.3"))
        self.s.presence(there, 0x63)
        self.assertEqual(rejections(there), [])
        self.assertIn(there, self.s.server.peers[0x63].connections)

    def test_rfc5355_2_5_accepted_networks(self):
        """
        C{--enrp-peer-networks}: a registrar from those networks may
        introduce itself.
        """
        s = Server(PeerPolicy(networks=parse_networks("127.0.1.0/24")))
        inside = s.connect(at("127.0.1.9"))
        s.presence(inside, 0x19)
        outside = s.connect(at("127.0.2.9"))
        s.presence(outside, 0x29)
        self.assertEqual(sorted(s.server.peers), [0x19])

    def test_rfc5355_2_5_tls_psk_identity_admitted_and_bound(self):
        """
        Over TLS-PSK with the registrars' keys a registrar proves it is
        one, from wherever it connects; its id is then bound to the
        identity it proved.
        """
        first = self.s.connect(at("127.0.0.66", identity=b"reg-a"))
        self.s.presence(first, 0x66)
        self.assertIn(0x66, self.s.server.peers)
        other = self.s.connect(at("127.0.0.66", identity=b"reg-b"))
        self.s.presence(other, 0x66)
        self.assertEqual(len(rejections(other)), 1)

    def test_rfc5355_2_5_stranger_takeover_refused(self):
        """
        Init Takeover and Takeover Server from a stranger change nothing:
        our peer's PEs keep their home, and our own takeover of that peer
        is not suppressed.
        """
        peer = self.s.connect(at("127.0.0.2"))
        self.s.presence(peer, 0x62)
        put(self.s.hs, b"P", 1, 0x62)
        stranger = self.s.connect(at("127.0.0.66"))
        self.s.send(stranger, InitTakeover(0x66, OURS, 0x62))
        self.s.send(stranger, TakeoverServer(0x66, OURS, 0x62))
        self.assertEqual(self.s.hs.get(b"P", 1).home_registrar, 0x62)
        self.assertEqual(self.s.server.peers[0x62].takeover_by, 0)
        self.assertEqual(stranger.of(InitTakeoverAck), [])

    def test_rfc5355_2_5_multicast_presence_outside_networks_not_dialled(self):
        """
        Presence over multicast (unauthenticated, its source easily forged)
        is followed only when the registrar and the address it names are
        acceptable.
        """
        s = Server(PeerPolicy(networks=parse_networks("127.0.1.0/24")))
        s.server.multicast_received(Presence(0x29, 0, 0xFFFF, info(0x29, "127.0.2.9")),
                                    A("127.0.2.9"), 0.0)
        # a source inside naming an address outside
        s.server.multicast_received(Presence(0x28, 0, 0xFFFF, info(0x28, "127.0.2.8")),
                                    A("127.0.1.8"), 0.0)
        self.assertEqual(s.dialled, [])
        s.server.multicast_received(Presence(0x19, 0, 0xFFFF, info(0x19, "127.0.1.9")),
                                    A("127.0.1.9"), 0.0)
        self.assertEqual([i.server_id for i in s.dialled], [0x19])
        authenticated = Server(PeerPolicy(authenticated=True))
        authenticated.server.multicast_received(
            Presence(0x29, 0, 0xFFFF, info(0x29, "127.0.2.9")), A("127.0.2.9"), 0.0)
        self.assertEqual([i.server_id for i in authenticated.dialled], [0x29])

    def test_rfc5355_2_5_refusals_bounded(self):
        """
        A stranger that keeps writing gets a few ENRP Errors, a few log
        lines, and its connection closed; nothing is stored.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        conn = self.s.connect(at("127.0.0.66"))
        for i in range(1000):
            if conn.closed:
                break
            self.s.send(conn, HandleUpdate(0x66, 0, ADD_PE, b"P", wire_pe(i + 1, 0x66)))
        self.assertTrue(conn.closed)
        self.assertEqual(len(self.s.hs), 0)
        self.assertLessEqual(len(rejections(conn)), 4)
        lines = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertLessEqual(len(lines), 11)

    def test_rfc5355_2_5_peer_list_bounded(self):
        """
        A peer's List Response naming thousands of registrars does not
        make us keep (and dial) thousands.
        """
        s = Server(PeerPolicy(static=["127.0.0.2"], max_peers=8))
        mentor = s.connect(at("127.0.0.2"))
        s.presence(mentor, 0x62)
        s.send(mentor, ListResponse(0x62, OURS, [info(0x1000 + i, "127.0.3.%d" % (i % 250 + 1))
                                                 for i in range(100)]))
        self.assertEqual(len(s.server.peers), 8)
        self.assertEqual(len(s.dialled), 7)


class BindingTests(unittest.TestCase):
    """
    RFC 5355 section 2.17 (and 2.5 without TLS): a peer id is bound to the
    connection and addresses it was admitted over.
    """

    def setUp(self):
        self.s = Server(PeerPolicy(static=["127.0.0.2", "127.0.0.3"]))
        self.b = self.s.connect(at("127.0.0.2"))
        self.s.presence(self.b, 0x62)
        self.s.send(self.b, HandleUpdate(0x62, 0, ADD_PE, b"P", wire_pe(7, 0x62)))
        self.assertIsNotNone(self.s.hs.get(b"P", 7))

    def test_rfc5355_2_17_spoofed_peer_id_on_other_connection(self):
        """
        A stranger that read B's id from a table dump and claims it over
        its own connection cannot remove B's PEs (DEL_PE), even after a
        Presence in B's name.
        """
        spoof = self.s.connect(at("127.0.0.66"))
        self.s.send(spoof, HandleUpdate(0x62, 0, DEL_PE, b"P", wire_pe(7, 0x62)))
        self.s.presence(spoof, 0x62)
        self.s.send(spoof, HandleUpdate(0x62, 0, DEL_PE, b"P", wire_pe(7, 0x62)))
        self.assertIsNotNone(self.s.hs.get(b"P", 7))
        self.assertEqual(len(rejections(spoof)), 3)
        self.assertEqual(self.s.server.peers[0x62].connections, [self.b])

    def test_rfc5355_2_17_known_id_from_another_peer_address(self):
        """
        B's id claimed from another accepted address (another static
        peer's) is refused: B is known at 127.0.0.2.
        """
        c = self.s.connect(at("127.0.0.3"))
        self.s.presence(c, 0x62)
        self.s.send(c, TakeoverServer(0x62, OURS, 0x99))
        self.assertEqual(len(rejections(c)), 2)

    def test_rfc5355_2_17_second_connection_while_connected(self):
        """
        On B's own address (on one host every registrar shares it) B's id
        is refused over a second connection while the one B opened is up.
        """
        again = self.s.connect(at("127.0.0.2"))
        self.s.presence(again, 0x62)
        self.s.send(again, HandleUpdate(0x62, 0, DEL_PE, b"P", wire_pe(7, 0x62)))
        self.assertIsNotNone(self.s.hs.get(b"P", 7))
        self.assertEqual(len(rejections(again)), 2)
        # Once that connection is gone, B may come back over a new one.
        self.s.server.connection_lost(self.b, 1.0)
        self.s.presence(again, 0x62, now=1.0)
        self.assertEqual(len(rejections(again)), 2)
        self.assertEqual(self.s.server.peers[0x62].connections, [again])

    def test_rfc5355_2_17_other_id_on_known_connection(self):
        """
        A connection speaks for one peer: another id over B's connection
        is refused, whatever the message.
        """
        self.s.presence(self.b, 0x63)
        self.s.send(self.b, HandleUpdate(0x63, 0, ADD_PE, b"P", wire_pe(8, 0x63)))
        self.assertNotIn(0x63, self.s.server.peers)
        self.assertIsNone(self.s.hs.get(b"P", 8))
        self.assertEqual(len(rejections(self.b)), 2)

    def test_rfc5355_2_17_add_pe_for_another_home_refused(self):
        """
        A peer announces the PEs it is home for (RFC 5353 section 3.3):
        an ADD_PE naming another registrar as home is refused.
        """
        c = self.s.connect(at("127.0.0.3"))
        self.s.presence(c, 0x63)
        self.s.send(c, HandleUpdate(0x63, 0, ADD_PE, b"P", wire_pe(7, 0x62, life=0)))
        pe = self.s.hs.get(b"P", 7)
        self.assertEqual((pe.home_registrar, pe.registration_life), (0x62, 60000))
        self.assertEqual(len(rejections(c)), 1)
        self.assertFalse(c.closed)

    def test_rfc5355_2_17_takeover_of_live_peer_without_init_refused(self):
        """
        A Takeover Server for a peer we hear, whose Init Takeover we never
        acknowledged, leaves its PEs alone; after the Init Takeover and our
        acknowledgement (RFC 5353 section 3.5) it is applied.
        """
        c = self.s.connect(at("127.0.0.3"))
        self.s.presence(c, 0x63)
        self.s.send(c, TakeoverServer(0x63, OURS, 0x62), 1.0)
        self.assertEqual(self.s.hs.get(b"P", 7).home_registrar, 0x62)
        self.assertEqual(len(rejections(c)), 1)
        self.s.send(c, InitTakeover(0x63, OURS, 0x62), 1.1)
        self.assertEqual(len(c.of(InitTakeoverAck)), 1)
        self.s.send(c, TakeoverServer(0x63, OURS, 0x62), 1.2)
        self.assertEqual(self.s.hs.get(b"P", 7).home_registrar, 0x63)

    def test_rfc5355_2_17_audit_entries_of_other_homes_ignored(self):
        """
        A W-flagged Handle Table Response (an audit) lists the sender's own
        PEs: entries naming another home are not stored.
        """
        c = self.s.connect(at("127.0.0.3"))
        self.s.server.timer_fired(5.0)  # leave startup: audits run
        self.s.presence(c, 0x63, now=5.0, checksum=0x1234)
        (request,) = c.of(HandleTableRequest)
        self.assertTrue(request.own_children_only)
        self.s.send(c, HandleTableResponse(0x63, OURS, [HandleTableEntry(
            b"P", [wire_pe(7, 0x62, life=0), wire_pe(9, 0x63)])]), 5.1)
        self.assertEqual(self.s.hs.get(b"P", 7).home_registrar, 0x62)
        self.assertEqual(self.s.hs.get(b"P", 9).home_registrar, 0x63)

    def test_rfc5355_2_17_dropped_peer_comes_back_only_over_its_connection(self):
        """
        A peer that left the peer list (silent, owning nothing) keeps its
        connection bound to its id: its next Presence there brings it back;
        another id there is refused.
        """
        self.s.hs.remove(self.s.hs.get(b"P", 7))
        self.s.server.timer_fired(5.0)
        self.s.server.timer_fired(10.0)
        self.assertNotIn(0x62, self.s.server.peers)
        self.s.presence(self.b, 0x64, now=10.1)
        self.assertNotIn(0x64, self.s.server.peers)
        self.s.presence(self.b, 0x62, now=10.2)
        self.assertIn(0x62, self.s.server.peers)

    def test_rfc5355_2_17_multicast_presence_does_not_keep_peer_alive(self):
        """
        A forged multicast Presence in a silent peer's name does not keep
        it in the peer list (it would block its takeover).
        """
        self.s.server.timer_fired(5.0)
        for t in (5.0, 6.0, 7.0, 8.0, 9.0, 10.0):
            self.s.server.multicast_received(Presence(0x62, 0, 0xFFFF, info(0x62, "127.0.0.2")),
                                             A("127.0.0.2"), t)
            self.s.server.timer_fired(t)
        # Silent for max-time-last-heard plus max-time-no-response: taken
        # over (no other peer to ask).
        self.assertEqual(self.s.hs.get(b"P", 7).home_registrar, OURS)


class ReadTests(unittest.TestCase):
    """
    RFC 5355 section 2.11: the handlespace (pools, PE addresses, the peers'
    addresses) is shown to peers and to this host only, unless the
    registrar is told to show it to anyone.
    """

    def setUp(self):
        self.s = Server(PeerPolicy(static=["192.0.2.2"], local=["192.0.2.50"]))
        put(self.s.hs, b"P", 1, OURS)

    def ask(self, conn, sender=0x77):
        if conn not in self.s.server.connections:
            self.s.connect(conn)
        self.s.send(conn, ListRequest(sender, 0))
        self.s.send(conn, HandleTableRequest(sender, 0))
        (lr,) = conn.of(ListResponse)
        (ht,) = conn.of(HandleTableResponse)
        return lr.reject, ht.reject

    def test_rfc5355_2_11_stranger_gets_no_table_dump(self):
        """
        A non-peer from elsewhere gets List and Handle Table Responses with
        the R flag (RFC 5353's rejection), and no PE.
        """
        conn = at("192.0.2.66")
        self.assertEqual(self.ask(conn), (True, True))
        self.assertEqual(conn.of(HandleTableResponse)[0].entries, ())

    def test_rfc5355_2_11_this_host_dumps(self):
        """
        ``rserpool dump`` and RSPLIB's hsdump on the registrar's host
        (loopback, one of its addresses, or the address it reached) are
        answered.
        """
        for conn in (at("127.0.0.1"), at("192.0.2.50"), at("192.0.2.9", local="192.0.2.9")):
            self.assertEqual(self.ask(conn), (False, False))

    def test_rfc5355_2_11_peer_and_public_dump(self):
        """
        A peer over its connection is answered; with C{--enrp-public-dump}
        anyone is.
        """
        peer = self.s.connect(at("192.0.2.2"))
        self.s.presence(peer, 0x62)
        self.assertEqual(self.ask(peer, 0x62), (False, False))
        spoof = at("192.0.2.66")
        self.assertEqual(self.ask(spoof, 0x62), (True, True))
        public = Server(PeerPolicy(public_dump=True))
        conn = at("192.0.2.66")
        public.connect(conn)
        public.send(conn, HandleTableRequest(0x77, 0))
        self.assertFalse(conn.of(HandleTableResponse)[0].reject)

    def test_hsdump_from_this_host(self):
        """
        RSPLIB's hsdump sends a Presence, a List Request and a Handle Table
        Request, and ignores an ENRP Error: its Presence is refused, it
        becomes neither peer nor mentor, and it gets its dump.
        """
        conn = self.s.connect(at("127.0.0.1"))
        self.s.presence(conn, 0x4D)
        self.s.send(conn, ListRequest(0x4D, 0))
        self.s.send(conn, HandleTableRequest(0x4D, 0))
        self.assertEqual(len(rejections(conn)), 1)
        self.assertEqual(self.s.server.peers, {})
        (ht,) = conn.of(HandleTableResponse)
        self.assertEqual(ht.entries[0].pool_elements[0].identifier, 1)


class DumpTests(unittest.TestCase):
    """
    A Handle Table Response series is built page by page when asked, from
    a position in the handlespace: no connection holds a copy of it.
    """

    def pages(self, s, conn, owner_only=False, between=None, bound=10000):
        out = []
        for i in range(bound):
            s.send(conn, HandleTableRequest(0x77, 0, owner_only))
            page = conn.sent[-1]
            out.append(page)
            if not page.more_to_send:
                return out
            if between is not None:
                between(i)
        self.fail("no last page")

    def test_dump_sees_every_stable_pe_once(self):
        """
        PEs removed and added between pages: every PE present throughout
        is sent exactly once, grouped by pool handle within each page.
        """
        s = Server(elements=50)
        for i in range(1, 1001):
            put(s.hs, b"pool%d" % (i % 7), i, OURS if i % 3 else 0x99)
        conn = s.connect(at("127.0.0.1"))
        removed = set()

        def churn(i):
            for pe_id in (i * 13 % 1000 + 1, i * 29 % 1000 + 1):
                pe = s.hs.get(b"pool%d" % (pe_id % 7), pe_id)
                if pe is not None:
                    s.hs.remove(pe)
                    removed.add(pe_id)
            put(s.hs, b"late", 5000 + i, OURS)

        pages = self.pages(s, conn, between=churn)
        seen = [pe.identifier for p in pages for e in p.entries for pe in e.pool_elements]
        self.assertEqual(len(seen), len(set(seen)))
        self.assertTrue(set(range(1, 1001)) - removed <= set(seen))
        for p in pages:
            handles = [e.pool_handle for e in p.entries]
            self.assertEqual(len(handles), len(set(handles)))
            self.assertLessEqual(sum(len(e.pool_elements) for e in p.entries), 50)
        owned = self.pages(s, s.connect(at("127.0.0.1")), owner_only=True)
        homes = {pe.home_registrar for p in owned for e in p.entries for pe in e.pool_elements}
        self.assertEqual(homes, {OURS})

    def test_dump_page_by_page_holds_no_copy(self):
        """
        After the first page of a 20,000-PE handlespace, a dump connection
        holds a few hundred bytes of state, not a copy of the table (the
        tester saw 6.9 MB per connection at 100,000 PEs).
        """
        s = Server()
        for i in range(1, 20001):
            put(s.hs, b"pool%d" % (i % 10), i, OURS)
        conns = [s.connect(at("127.0.0.1")) for _ in range(20)]
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.take_snapshot()
        for conn in conns:
            s.send(conn, HandleTableRequest(0x77, 0))
            conn.sent.clear()
        after = tracemalloc.take_snapshot()
        grown = sum(d.size_diff for d in after.compare_to(before, "filename")
                    if "rserpool/enrp" in d.traceback[0].filename)
        self.assertLess(grown, 20 * 2000)


class OptionsTests(unittest.TestCase):
    """
    C{twistd enrp}: the options of this part, and the refusal to let a key
    of the PEs and pool users open ENRP (RFC 5355 section 2.5).
    """

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options.settings

    def test_rfc5355_2_5_pool_user_key_never_opens_enrp(self):
        """
        C{--psk-keys} with ENRP on needs C{--psk-peer-keys}, in a file of
        its own sharing no identity; given as C{psk:} endpoints, the ENRP
        listener's key file must not be an ASAP listener's.
        """
        pool = write_keys(self, KEYS)
        registrars = write_keys(self, "reg-1 {}\n".format(KEY_1.hex()))
        mixed = write_keys(self, "reg-1 {}\npe-2 {}\n".format(KEY_1.hex(), KEY_2.hex()))
        cases = [
            (["--psk-keys", pool, "--psk-identity", "pe-1"], "needs --psk-peer-keys"),
            (["--psk-keys", pool, "--psk-peer-keys", pool, "--psk-identity", "pe-1"],
             "a key file of their own"),
            (["--psk-keys", pool, "--psk-peer-keys", mixed, "--psk-identity", "reg-1"],
             "identity 'pe-2' is both in"),
            (["--asap", "psk:3863:keys=" + escape(pool), "--enrp", "psk:9901:keys=" + escape(pool)],
             "a key file of their own"),
            (["--asap", "psk:3863:keys=" + escape(pool),
              "--enrp", "psk:9901:keys=" + escape(mixed)], "identity 'pe-2' is both in"),
        ]
        for argv, message in cases:
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*argv)
            self.assertIn(message, str(caught.exception), argv)
        self.assertIsNotNone(self.parse("--psk-keys", pool, "--psk-peer-keys", registrars)["psk"])
        self.assertIsNotNone(self.parse("--psk-keys", pool, "--enrp", "none")["psk"])

    def test_rfc5355_2_5_multicast_needs_networks(self):
        """
        Presence over multicast is not authenticated: C{--enrp-multicast}
        follows the peer networks (by default those of this host's
        interfaces), so it is refused with C{--enrp-peer-networks none}
        (unless TLS-PSK).
        """
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--enrp-multicast", "--enrp-peer-networks", "none")
        self.assertIn("--enrp-peer-networks", str(caught.exception))
        self.assertIsNone(self.parse("--enrp-multicast")["enrp-peer-networks"])
        s = self.parse("--enrp-multicast", "--enrp-peer-networks", "192.0.2.0/24, 2001:db8::/64")
        self.assertEqual(s["enrp-peer-networks"], parse_networks("192.0.2.0/24,2001:db8::/64"))
        with self.assertRaises(usage.UsageError):
            self.parse("--enrp-peer-networks", "192.0.2.0/33")

    def test_policy_reaches_the_server(self):
        """
        The static peers' addresses, the networks and the public dump
        switch reach the ENRP server's L{PeerPolicy}.
        """
        options = tap.Options()
        options.parseOptions(["--peer", "127.0.0.2:9901", "--peer", "sctp:host=127.0.0.3,127.0.0.4:"
                              "port=9901:ppid=12", "--enrp-peer-networks", "127.0.1.0/24",
                              "--enrp-public-dump"])
        policy = tap.makeService(options).peer_policy()
        self.assertEqual(policy.static, {A("127.0.0.2"), A("127.0.0.3"), A("127.0.0.4")})
        self.assertEqual(policy.networks, parse_networks("127.0.1.0/24"))
        self.assertTrue(policy.public_dump)
        self.assertFalse(self.parse()["enrp-public-dump"])

    def test_endpoint_addresses(self):
        self.assertEqual(endpoint_addresses("tcp:host=\\:\\:1:port=9901"), {A("::1")})
        self.assertEqual(endpoint_addresses("psk:127.0.0.2:9901:keys=/k"), {A("127.0.0.2")})
        self.assertEqual(endpoint_addresses("tcp:registrar.example:9901"), frozenset())


class EndToEndTests(unittest.TestCase):
    """
    L{RegistrarService} on loopback TCP, with raw ENRP clients playing the
    attacker.
    """

    timeout = 30

    @defer.inlineCallbacks
    def registrar(self, server_id, address, *extra, enrp_port=0):
        service = yield tap_registrar(self, [
            "--asap", "tcp:0:interface=%s" % address,
            "--enrp", "tcp:%d:interface=%s" % (enrp_port, address),
            "--id", hex(server_id), "--quiet", "--peer-heartbeat-cycle", "0.2",
            "--mentor-discovery-timeout", "0.3"] + list(extra))
        return service

    @defer.inlineCallbacks
    def client(self, port, host="127.0.0.1", source=None, protocol_name="enrp"):
        client = RawClient(protocol_name, auto_ack=True)
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=5,
                                      bindAddress=(source, 0) if source else None)
        yield connectProtocol(endpoint, client)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def register(self, service, handle, pe_id):
        host = service.asap_ports[0].getHost()
        pe = yield self.client(host.port, host.host, protocol_name="asap")
        element = PoolElement(pe_id, 0, 60000, TCPTransport(pe.transport.getHost().port,
                                                            [pe.transport.getHost().host]),
                              Policy(PolicyType.ROUND_ROBIN))
        response = yield pe.request(Registration(handle, element), RegistrationResponse)
        self.assertFalse(response.reject)

    @defer.inlineCallbacks
    def test_rfc5355_2_5_stranger_handle_update_over_tcp(self):
        """
        A default registrar (no peers): a raw client sends Handle Updates
        to its ENRP port, with and without a Presence first, one with a
        life of 0 into a pool that has a real PE; the handlespace keeps
        the real PE only, and the client, refused, is closed.
        """
        service = yield self.registrar(0xA1, "127.0.0.1")
        yield self.register(service, b"Legit", 0x1)
        attacker = yield self.client(service.enrp_ports[0].getHost().port)
        attacker.send(HandleUpdate(0x66, 0, ADD_PE, b"Legit", wire_pe(0x666, 0x66, life=0)))
        error = yield attacker.expect(ENRPError)
        self.assertEqual([c.code for c in error.error.causes],
                         [ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS])
        attacker.send(Presence(0x66, 0, 0xFFFF, info(0x66)))
        for i in range(100):
            attacker.send(HandleUpdate(0x66, 0, ADD_PE, b"Fake", wire_pe(i + 1, 0x66, life=0)))
        yield attacker.lost.addTimeout(10, reactor)
        hs = service.registrar.handlespace
        self.assertEqual([(pe.handle, pe.pe_id) for pe in hs.elements()], [(b"Legit", 0x1)])
        self.assertEqual(service.enrp.peers, {})

    @defer.inlineCallbacks
    def test_rfc5355_2_17_spoofed_peer_id_over_tcp(self):
        """
        Registrars A (127.0.0.1) and B (127.0.0.2) peer; a PE registers at
        B.  An attacker that read B's id claims it towards A, from another
        address and from B's own, and sends DEL_PE and Takeover Server:
        A keeps B's PE with B as its home.
        """
        # Each names the other with --peer: B, started first, listens on
        # port 0; A's port must be named to B before A listens (free_port).
        port_a = free_port("127.0.0.1")
        b = yield self.registrar(0xB2, "127.0.0.2", "--peer", "tcp:127.0.0.1:%d" % port_a)
        port_b = b.enrp_ports[0].getHost().port
        a = yield self.registrar(0xA1, "127.0.0.1", "--peer", "tcp:127.0.0.2:%d" % port_b,
                                 enrp_port=port_a)
        yield eventually(lambda: 0xB2 in a.enrp.peers and 0xA1 in b.enrp.peers, "peering")
        yield self.register(b, b"Victim", 0x7)
        yield eventually(lambda: a.registrar.handlespace.get(b"Victim", 0x7) is not None,
                         "the Handle Update")
        yield eventually(lambda: any(not a.enrp._conns[c].outgoing
                                     for c in a.enrp.peers[0xB2].connections), "B's connection")
        victim = a.registrar.handlespace.get(b"Victim", 0x7)
        wire = PoolElement(0x7, 0xB2, 60000, victim.user_transport.wire,
                           Policy(PolicyType.ROUND_ROBIN))
        port = a.enrp_ports[0].getHost().port
        for source in ("127.0.0.3", "127.0.0.2"):
            attacker = yield self.client(port, source=source)
            attacker.send(Presence(0xB2, 0, 0xFFFF, info(0xB2, "127.0.0.2")))
            attacker.send(HandleUpdate(0xB2, 0xA1, DEL_PE, b"Victim", wire))
            attacker.send(TakeoverServer(0xB2, 0xA1, 0xB2))
            # A answers this host's dump in order: the refusals are done.
            yield attacker.request(HandleTableRequest(0x77, 0), HandleTableResponse)
            refused = [m for m in attacker.messages if isinstance(m, ENRPError)]
            self.assertEqual(len(refused), 3, source)
            pe = a.registrar.handlespace.get(b"Victim", 0x7)
            self.assertIsNotNone(pe, source)
            self.assertEqual(pe.home_registrar, 0xB2)
        self.assertEqual(len(a.enrp.peers[0xB2].connections), 2)

    @defer.inlineCallbacks
    def test_rfc5355_2_11_dump_from_this_host_over_tcp(self):
        """
        ``rserpool dump``'s requests from this host are answered by a
        default registrar (tests/test_cli_pool.py runs the command).
        """
        service = yield self.registrar(0xA1, "127.0.0.1")
        yield self.register(service, b"Shown", 0x5)
        reader = yield self.client(service.enrp_ports[0].getHost().port)
        response = yield reader.request(HandleTableRequest(0x77, 0), HandleTableResponse)
        self.assertFalse(response.reject)
        self.assertEqual(response.entries[0].pool_elements[0].identifier, 0x5)


class DefaultNetworksTests(unittest.TestCase):
    """
    By default a registrar admits registrars of the networks its own
    interfaces are on (issue #13: a cluster on one LAN peers with --peer on
    one side only), never loopback (issue #14: any process of the host).
    """

    def test_host_networks(self):
        networks = host_networks()
        self.assertFalse(any(n.network_address.is_loopback for n in networks))
        self.assertFalse(any(n.version == 6 and n.network_address.is_link_local
                             for n in networks))

    def test_default_is_the_host_networks(self):
        service = RegistrarService(make_config())
        self.assertEqual(service.peer_policy().networks, host_networks())
        none = RegistrarService(make_config(), peer_networks=())
        self.assertEqual(none.peer_policy().networks, ())
