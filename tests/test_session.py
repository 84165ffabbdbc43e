"""
Tests for the Enhanced Mode session layer: the sans-IO cores (order of
Cookie Echo, Business Card, failover callback and re-sent data), the PE
side over a L{StringTransport} with a L{Clock}, and a failover on loopback.
"""
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from rserpool.codes import ASAP_PPID, PolicyType
from rserpool.pe import PoolElementService
from rserpool.pu import PoolClientEndpoint, PoolUser
from rserpool.registrar import RegistrarService, make_config
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
    SendFrame,
)
from rserpool.session.protocol import PESessionFactory
from rserpool.transport import mux
from rserpool.wire import Cookie, CookieEcho, Policy, PoolElement, TCPTransport, decode, encode


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
        self.assertEqual(core.received(b"", CLOSE_PPID), [PeerClosed()])
        self.assertFalse(core.lost())
        core2 = PUSessionCore()
        core2.connected()
        self.assertEqual(core2.close(), [SendFrame(b"", CLOSE_PPID)])
        self.assertFalse(core2.lost())

    def test_data(self):
        core = PUSessionCore()
        self.assertEqual(core.received(b"hi", 0), [Deliver(b"hi")])

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


class PESideTests(unittest.TestCase):
    """
    L{PESessionFactory} over a L{StringTransport} and a L{task.Clock}.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.app = Recorder()
        factory = PESessionFactory(Factory.forProtocol(lambda: self.app), self.clock,
                                   heartbeat_interval=1.0, max_missed=3)
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.peer = mux.MuxConnection(0, interval=None)

    def frames(self):
        data = self.transport.value()
        self.transport.clear()
        return [(e.ppid, e.payload) for e in self.peer.receive(data, self.clock.seconds())
                if isinstance(e, mux.DataReceived)]

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

    def test_close_marker(self):
        self.app.transport.loseConnection()
        self.assertEqual(self.frames(), [(CLOSE_PPID, b"")])
        self.assertTrue(self.transport.disconnecting)


class Upper(Protocol):
    def dataReceived(self, data):
        self.transport.write(data.upper())

    def cookieReceived(self, cookie):
        self.factory.cookies.append(cookie)


class Collector(Protocol):
    def __init__(self):
        self.replies = []
        self.failovers = []

    def sessionFailover(self, pe):
        self.failovers.append(pe.identifier)
        self.transport.write(b"after-failover")

    def dataReceived(self, data):
        self.replies.append(data)


class LoopbackFailoverTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.registrar = RegistrarService(make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"])
        self.registrar.startService()
        ports = yield self.registrar.ready
        self.endpoint = "tcp:127.0.0.1:%d" % ports[0].getHost().port
        self.addCleanup(self.registrar.stopService)
        self.pes = []
        self.cookies = []
        for _ in range(2):
            factory = Factory.forProtocol(Upper)
            factory.cookies = self.cookies
            pe = PoolElementService(b"Upper", factory, registrars=[self.endpoint], enhanced=True)
            pe.startService()
            self.addCleanup(lambda pe=pe: pe.running and pe.stopService())
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
        yield task.deferLater(reactor, 0.1, lambda: None)
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
        for _ in range(40):
            if len(client.replies) >= 3:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(client.replies, [b"ONE", b"AFTER-FAILOVER", b"TWO"])
        self.assertEqual(client.transport.failovers, 1)
        self.assertEqual(self.cookies, [b"cookie-1"])
        self.assertEqual(len(session.history), 2)
        self.assertNotEqual(session.history[0], session.history[1])
        client.transport.loseConnection()
        for _ in range(40):
            if session.link is None and not any(pe.session_factory.sessions for pe in self.pes):
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
