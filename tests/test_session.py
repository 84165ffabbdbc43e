"""
Tests for the Enhanced Mode session layer: the sans-IO cores (order of
Cookie Echo, Business Card, failover callback and re-sent data), the PE
side over a L{StringTransport} with a L{Clock}, and a failover on loopback.
"""
import attrs
from twisted.internet import defer, error, reactor, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from rserpool.asap.pool_user import PoolElementInfo
from rserpool.codes import ASAP_PPID, PolicyType
from rserpool.pe import PoolElementService
from rserpool.pu import PoolClientEndpoint, PoolUser
from rserpool.session import business_card
from rserpool.session.core import (
    CLOSE_PPID,
    BusinessCardReceived,
    CallFailover,
    CookieIndication,
    Deliver,
    PeerClosed,
    PESessionCore,
    PUSessionCore,
    SendClose,
    SendFrame,
)
from rserpool.transport.enhanced import PESessionFactory, PoolSession
from rserpool.transport import mux
from rserpool.transport.sctp import SCTPAddress, SCTPStatus
from rserpool.transport.tcp import MultiplexProtocol
from rserpool.wire import (
    Cookie,
    CookieEcho,
    Policy,
    PoolElement,
    SCTPTransport,
    TCPTransport,
    decode,
    encode,
)

from tests.helpers import PESessionPeer, eventually, loopback_registrar, running


class PUCoreTests(unittest.TestCase):
    def test_first_connection(self):
        core = PUSessionCore()
        self.assertEqual(core.send(b"early"), [])
        self.assertEqual(core.connected(), [])
        self.assertEqual(core.flush(), [SendFrame(b"early")])
        self.assertEqual(core.send(b"x"), [SendFrame(b"x")])

    def test_failover_order(self):
        # Services draft 4.5.1/4.5.2: cookie first, then the failover
        # callback, then the data not yet handed to the transport.
        card = business_card(b"Mine", [PoolElement(5, 0, 1000, TCPTransport(9, ("127.0.0.1",)),
                                                   Policy.make(PolicyType.ROUND_ROBIN))])
        core = PUSessionCore(business_card=card)
        core.connected()
        core.received(encode(Cookie(b"state-1")), ASAP_PPID)
        core.received(encode(Cookie(b"state-2")), ASAP_PPID)
        self.assertEqual(core.cookie, b"state-2")
        self.assertTrue(core.lost())
        core.send(b"a")
        core.send(b"b")
        actions = core.connected()
        self.assertEqual(actions[0], SendFrame(encode(CookieEcho(b"state-2")), ASAP_PPID))
        self.assertEqual(decode(actions[1].payload, "asap"), card)
        self.assertEqual(actions[2], CallFailover(1))
        self.assertEqual(core.flush(), [SendFrame(b"a"), SendFrame(b"b")])
        self.assertEqual(core.failovers, 1)

    def test_deliberate_close(self):
        core = PUSessionCore()
        core.connected()
        self.assertEqual(core.peer_closed(), [PeerClosed()])
        self.assertFalse(core.lost())
        core2 = PUSessionCore()
        core2.connected()
        self.assertEqual(core2.close(), [SendClose()])
        self.assertFalse(core2.lost())

    def test_data(self):
        core = PUSessionCore()
        self.assertEqual(core.received(b"hi", 0), [Deliver(b"hi")])
        # the mapping-agnostic core keeps the application's PPID and stream
        self.assertEqual(core.received(b"hi", 33, 2), [Deliver(b"hi", 33, 2)])
        core.connected()
        self.assertEqual(core.send(b"x", 33, 1, True), [SendFrame(b"x", 33, 1, True)])

    def test_reserved_ppids(self):
        # 11 (ASAP), 12 (ENRP) and the close marker's PPID are not data.
        core = PUSessionCore()
        core.connected()
        for ppid in (ASAP_PPID, 12, CLOSE_PPID, -1, 1 << 32):
            self.assertRaises(ValueError, core.send, b"x", ppid)
        self.assertRaises(ValueError, PESessionCore().send, b"x", ASAP_PPID)

    def test_max_pending(self):
        core = PUSessionCore(max_pending=1)
        core.send(b"1")
        self.assertRaises(BufferError, core.send, b"2")


class PECoreTests(unittest.TestCase):
    def test_cookie_indication(self):
        core = PESessionCore()
        events = core.received(encode(CookieEcho(b"c")), ASAP_PPID)
        self.assertEqual(events, [CookieIndication(b"c")])
        self.assertEqual(core.cookie_received, b"c")

    def test_set_cookie(self):
        frame = PESessionCore().set_cookie(b"xyz")
        self.assertEqual(frame.ppid, ASAP_PPID)
        self.assertEqual(decode(frame.payload, "asap"), Cookie(b"xyz"))

    def test_business_card(self):
        card = business_card("Mine")
        (event,) = PESessionCore().received(encode(card), ASAP_PPID)
        self.assertEqual(event, BusinessCardReceived(card))


class Recorder(Protocol):
    def __init__(self):
        self.events = []

    def cookieReceived(self, cookie):
        self.events.append(("cookie", cookie))
        self.transport.set_cookie(b"next")

    def businessCardReceived(self, card):
        self.events.append(("card", card.pool_handle))

    def dataReceived(self, data):
        self.events.append(("data", data))
        self.transport.write(data.upper())

    def connectionLost(self, reason):
        self.events.append(("lost", reason.type.__name__))


class PESideTests(PESessionPeer, unittest.TestCase):
    """
    L{PESessionFactory} over a L{StringTransport} and a L{task.Clock}.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.app = Recorder()
        self.connect_pe_session(self.app, self.clock, heartbeat_interval=1.0, max_missed=3)

    def test_cookie_before_data(self):
        self.peer.send(encode(CookieEcho(b"old-state")), ASAP_PPID)
        self.peer.send(b"hello", 0)
        self.proto.dataReceived(self.peer.data_to_send())
        self.assertEqual(self.app.events, [("cookie", b"old-state"), ("data", b"hello")])
        self.assertEqual(self.app.transport.cookie_received, b"old-state")
        frames = self.frames()
        self.assertEqual(frames[0], (ASAP_PPID, encode(Cookie(b"next"))))
        self.assertEqual(frames[1], (0, b"HELLO"))

    def test_business_card(self):
        self.peer.send(encode(business_card("Mine")), ASAP_PPID)
        self.proto.dataReceived(self.peer.data_to_send())
        self.assertEqual(self.app.events, [("card", b"Mine")])
        self.assertEqual(self.app.transport.business_card.pool_handle, b"Mine")

    def test_heartbeat_timeout(self):
        # The mapping's heartbeat: silence for 3 intervals kills the link.
        self.clock.advance(1.0)
        self.assertIn(mux.HEARTBEAT, self.transport.value()[:1])
        self.clock.advance(2.0)
        self.assertTrue(self.transport.disconnecting or self.transport.disconnected
                        or getattr(self.transport, "aborted", False))

    def test_close_frame(self):
        # The deliberate end is the multiplexed framing's CLOSE frame.
        self.app.transport.loseConnection()
        self.assertEqual(self.frames(), [mux.CloseReceived()])
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.app.events, [("lost", "ConnectionDone")])

    def test_peer_close_frame(self):
        self.peer.send_close()
        self.proto.dataReceived(self.peer.data_to_send())
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.app.events, [("lost", "ConnectionDone")])

    def test_legacy_close_marker(self):
        # Peers from before the CLOSE frame sent an empty DATA frame with
        # PPID 0xffffffff: still a deliberate end.
        self.peer.send(b"", CLOSE_PPID)
        self.proto.dataReceived(self.peer.data_to_send())
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.app.events, [("lost", "ConnectionDone")])

    def test_connection_lost_without_close(self):
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.app.events, [("lost", "ConnectionDone")])


class MuxCloseFrameTests(unittest.TestCase):
    """
    The multiplexed framing's CLOSE frame (doc/tcp-mapping.rst) and
    L{MultiplexProtocol}'s callbacks.  (They belong with
    tests.test_tcp_mapping; kept here with the session layer that uses
    them.)
    """

    def test_layout(self):
        c = mux.MuxConnection(0.0, interval=None)
        c.send_close()
        c.send_close()
        self.assertEqual(c.data_to_send(), bytes.fromhex("a3 00 00 00 00 00 00 00 00 00 00 00"))

    def test_receive(self):
        c = mux.MuxConnection(0.0, interval=None)
        data = mux.encode_frame(mux.DATA, b"last", 5) + mux.encode_frame(mux.CLOSE, b"")
        events = c.receive(data + mux.encode_frame(mux.DATA, b"ignored", 5), 0.0)
        self.assertEqual(events, [mux.DataReceived(b"last", 5), mux.CloseReceived()])
        self.assertEqual(c.receive(mux.encode_frame(mux.DATA, b"later"), 0.0), [])

    def test_close_with_payload(self):
        c = mux.MuxConnection(0.0, interval=None)
        self.assertRaises(mux.MuxFramingError, c.receive, mux.encode_frame(mux.CLOSE, b"x"), 0.0)

    def test_no_heartbeat_after_close(self):
        c = mux.MuxConnection(0.0, interval=1.0)
        c.send_close()
        self.assertIsNone(c.next_deadline)
        self.assertEqual(c.timer(100.0), [])

    def setUp(self):
        self.clock = task.Clock()
        self.events = {"server": [], "client": []}

        def make(name):
            got = self.events[name]
            return MultiplexProtocol(
                self.clock, got.append, on_dead=lambda: got.append("dead"),
                on_close=lambda: got.append("close"),
                on_lost=lambda reason: got.append(("lost", reason.type.__name__)), interval=5.0)

        self.server, self.client = make("server"), make("client")
        self.server_t = iosim.FakeTransport(self.server, isServer=True)
        self.client_t = iosim.FakeTransport(self.client, isServer=False)
        self.pump = iosim.connect(self.server, self.server_t, self.client, self.client_t)

    def test_protocol_close(self):
        self.client.send(b"bye", 7)
        self.client.close()
        self.pump.flush()
        self.assertEqual(self.events["server"][:2], [mux.DataReceived(b"bye", 7), "close"])
        self.assertTrue(self.server.closed_by_peer)
        self.assertEqual(self.events["server"][-1][0], "lost")
        self.assertEqual(self.events["client"][-1][0], "lost")

    def test_dead_peer_aborted(self):
        # A silent peer may never read: abort, do not wait for a clean close.
        calls = []
        abort = self.client_t.abortConnection
        self.client_t.abortConnection = lambda: (calls.append("abort"), abort())
        self.client_t.loseConnection = lambda: calls.append("lose")
        for _ in range(3):
            self.clock.advance(5.0)
        self.assertEqual(calls, ["abort"])
        self.assertIn("dead", self.events["client"])
        self.pump.flush()
        self.assertEqual(self.events["client"][-1][0], "lost")


class Upper(Protocol):
    def dataReceived(self, data):
        self.transport.write(data.upper())

    def cookieReceived(self, cookie):
        self.factory.cookies.append(cookie)


class Collector(Protocol):
    def __init__(self):
        self.replies = []
        self.failovers = []
        self.lost = []

    def connectionLost(self, reason):
        self.lost.append(reason.type.__name__)

    def sessionFailover(self, pe):
        self.failovers.append(pe.identifier)
        self.transport.write(b"after-failover")

    def dataReceived(self, data):
        self.replies.append(data)


class LoopbackFailoverTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.registrar, self.endpoint = yield loopback_registrar(self)
        self.pes = []
        self.cookies = []
        for _ in range(2):
            factory = Factory.forProtocol(Upper)
            factory.cookies = self.cookies
            pe = running(self, PoolElementService(b"Upper", factory, registrars=[self.endpoint],
                                                  enhanced=True))
            self.pes.append(pe)
            yield pe.registered
        self.pu = PoolUser(reactor, registrars=[self.endpoint])
        self.addCleanup(self.pu.close)

    @defer.inlineCallbacks
    def test_failover(self):
        endpoint = PoolClientEndpoint(reactor, self.pu, b"Upper")
        client = yield endpoint.connect(Factory.forProtocol(Collector))
        session = client.transport._session
        client.transport.write(b"one")
        yield eventually(lambda: client.replies, "the first reply")
        self.assertEqual(client.replies, [b"ONE"])
        self.assertEqual(client.transport.failovers, 0)
        # Give the PU a cookie, as SET_COOKIE at the PE would.
        session.core.cookie = b"cookie-1"
        served = [pe for pe in self.pes if pe.identifier == session.pe.identifier][0]
        original = session.link_lost

        def lost(link, reason):
            session.link_lost = original
            original(link, reason)
            # Written while no connection is up: kept and re-sent after
            # the failover callback's message.
            client.transport.write(b"two")

        session.link_lost = lost
        for s in list(served.session_factory.sessions):
            s.link.transport.abortConnection()
        yield eventually(lambda: len(client.replies) >= 3,
                         lambda: "three replies, not %r" % (client.replies,))
        self.assertEqual(client.replies, [b"ONE", b"AFTER-FAILOVER", b"TWO"])
        self.assertEqual(client.transport.failovers, 1)
        self.assertEqual(self.cookies, [b"cookie-1"])
        self.assertEqual(len(session.history), 2)
        self.assertNotEqual(session.history[0], session.history[1])
        client.transport.loseConnection()
        yield eventually(
            lambda: session.link is None and not any(pe.session_factory.sessions for pe in self.pes),
            "the sessions at the PU and the PEs to close")


class FakeSCTPTransport(StringTransport):
    """
    A one-to-one SCTP association as the session layer sees it: addresses of
    type C{"SCTP"} and C{writeMessage} (recorded, one entry per message).
    """

    def __init__(self):
        StringTransport.__init__(self, peerAddress=SCTPAddress("127.0.0.1", 7),
                                 hostAddress=SCTPAddress("127.0.0.1", 9))
        self.messages = []
        self.aborted = False

    def writeMessage(self, data, ppid=None, stream=None, unordered=False):
        self.messages.append((bytes(data), ppid, stream, unordered))

    def write(self, data):
        raise AssertionError("a session over SCTP writes messages, not bytes: %r" % (data,))

    def abortConnection(self):
        self.aborted = True
        StringTransport.loseConnection(self)

    def getStatus(self):
        return attrs.evolve(STATUS, srtt=0.002)


STATUS = SCTPStatus(4, 0, 10, 10, 1400, ("127.0.0.1", 7), 0.0, 0.2, 1500)


class PESideSCTPTests(unittest.TestCase):
    """
    L{PESessionFactory} over an SCTP association: control and data are
    told apart by the PPID (services draft section 5.1), as RSPLIB does.
    """

    def setUp(self):
        self.app = Recorder()
        factory = PESessionFactory(Factory.forProtocol(lambda: self.app), task.Clock())
        self.proto = factory.buildProtocol(SCTPAddress("127.0.0.1", 7))
        self.transport = FakeSCTPTransport()
        self.proto.makeConnection(self.transport)

    def test_mapping(self):
        self.assertEqual(self.app.transport.mapping, "sctp")
        self.assertEqual(self.app.transport.rtt(), 0.002)

    def test_cookie_echo_and_data(self):
        self.proto.messageReceived(encode(CookieEcho(b"old-state")), ASAP_PPID, 0)
        self.proto.messageReceived(b"hello", 0, 0)
        self.assertEqual(self.app.events, [("cookie", b"old-state"), ("data", b"hello")])
        self.assertEqual(self.transport.messages, [
            (encode(Cookie(b"next")), ASAP_PPID, 0, False),
            (b"HELLO", 0, 0, False),
        ])
        # No multiplexed framing, no heartbeat: SCTP has its own.
        self.assertEqual(self.transport.value(), b"")

    def test_application_ppid(self):
        seen = []

        class WithPPID(Protocol):
            def messageReceived(self, data, ppid, stream):
                seen.append((data, ppid, stream))
                self.transport.writeMessage(data, ppid, stream)

        factory = PESessionFactory(Factory.forProtocol(WithPPID), task.Clock(), data_ppid=33)
        proto = factory.buildProtocol(None)
        transport = FakeSCTPTransport()
        proto.makeConnection(transport)
        proto.messageReceived(b"ping", 33, 1)
        session = next(iter(factory.sessions))
        session.transport.write(b"default")
        self.assertEqual(seen, [(b"ping", 33, 1)])
        self.assertEqual(transport.messages, [(b"ping", 33, 1, False), (b"default", 33, 0, False)])

    def test_close_marker(self):
        # A PE's deliberate end cannot be told from its death by SCTP: the
        # marker message goes first, then SHUTDOWN.
        self.app.transport.loseConnection()
        self.assertEqual(self.transport.messages, [(b"\x00", CLOSE_PPID, 0, False)])
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.aborted)

    def test_pu_shutdown(self):
        # The PU's SHUTDOWN: the session ends without a failover, the
        # application sees ConnectionDone; an ABORT is ConnectionLost.
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.app.events, [("lost", "ConnectionDone")])

    def test_pu_abort(self):
        self.proto.connectionLost(Failure(error.ConnectionLost()))
        self.assertEqual(self.app.events, [("lost", "ConnectionLost")])


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    Connects a protocol to a new L{FakeSCTPTransport} at once.
    """

    def __init__(self, transports):
        self.transports = transports

    def connect(self, factory):
        protocol = factory.buildProtocol(SCTPAddress("127.0.0.1", 7))
        transport = FakeSCTPTransport()
        transport.protocol = protocol
        self.transports.append(transport)
        protocol.makeConnection(transport)
        return defer.succeed(protocol)


class PUSideSCTPTests(unittest.TestCase):
    """
    L{PoolSession} over SCTP associations: the cookie arrives with PPID 11,
    any end of the association the PU did not ask for (a killed PE's kernel
    shuts down gracefully) means failover, and the Cookie Echo goes first
    with PPID 11.
    """

    def setUp(self):
        self.transports = []
        self.client = Collector()
        pes = [PoolElementInfo(b"P", n, SCTPTransport(7, ("127.0.0.1",), 1),
                               Policy.make(PolicyType.ROUND_ROBIN)) for n in (1, 2)]
        self.session = PoolSession(task.Clock(), None, b"P", Factory.forProtocol(lambda: self.client),
                                   endpoint_for=lambda info: FakeEndpoint(self.transports),
                                   candidates=pes, data_ppid=33)
        self.connected = self.successResultOf(self.session.connect())

    def test_failover_with_cookie(self):
        first = self.transports[0]
        self.client.transport.write(b"ping-1")
        first.protocol.messageReceived(encode(Cookie(b"PPP-state")), ASAP_PPID, 0)
        first.protocol.messageReceived(b"pong-1", 33, 0)
        self.assertEqual(self.client.replies, [b"pong-1"])
        self.assertEqual(self.client.transport.mapping, "sctp")
        first.protocol.connectionLost(Failure(error.ConnectionDone()))
        second = self.transports[1]
        self.assertEqual(self.client.failovers, [2])
        self.assertEqual(second.messages, [
            (encode(CookieEcho(b"PPP-state")), ASAP_PPID, 0, False),
            (b"after-failover", 33, 0, False),
        ])
        self.assertEqual(first.messages, [(b"ping-1", 33, 0, False)])

    def test_pe_close_marker(self):
        first = self.transports[0]
        first.protocol.messageReceived(b"\x00", CLOSE_PPID, 0)
        self.assertTrue(first.disconnecting)
        first.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(len(self.transports), 1)
        self.assertEqual(self.client.lost, ["ConnectionDone"])

    def test_pu_close(self):
        # The PU's deliberate end is SHUTDOWN alone, as RSPLIB's rsp_close().
        first = self.transports[0]
        self.client.transport.loseConnection()
        self.assertEqual(first.messages, [])
        self.assertTrue(first.disconnecting)
        first.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(len(self.transports), 1)
        self.assertEqual(self.client.lost, ["ConnectionDone"])
