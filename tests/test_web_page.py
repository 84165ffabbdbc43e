"""
The handlespace page (issue #16): pages of 100 rows whatever the pool's
size, the filter, escaping, and the server-sent events that make it live.
"""
import ipaddress

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from rserpool.asap.registrar import UserTransport
from rserpool.codes import PolicyType
from rserpool.handlespace import PolicySettings
from rserpool.services import RegistrarService, make_config
from rserpool.web.page import PAGE_SIZE, HandlespacePage
from rserpool.wire import DATA_PLUS_CONTROL, RegistrationResponse, TCPTransport
from tests import test_web
from tests.test_web import registration

TIMEOUT = 10.0


def fill(service, handle, count, home=None):
    """
    Put C{count} PEs into a registrar's handlespace directly.
    """
    hs = service.registrar.handlespace
    home = home if home is not None else service.registrar.server_id
    for i in range(count):
        address = ipaddress.ip_address("10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255))
        hs.register(handle, 0x100000 + i, home_registrar=home,
                    policy=PolicySettings(PolicyType.ROUND_ROBIN),
                    user_transport=UserTransport(TCPTransport(7000, (address,), DATA_PLUS_CONTROL)),
                    now=0.0, registration_life=30000)


class PageTests(unittest.TestCase):
    def setUp(self):
        self.service = RegistrarService(make_config(server_id=0x1234),
                                        asap_endpoints=[], reactor=reactor)
        self.page = HandlespacePage(self.service.monitor)

    def test_ten_thousand(self):
        """
        A pool of 10,000 PEs shows 100 rows a page, with a pager; the
        filter narrows it.
        """
        fill(self.service, b"big", 10000)
        html = self.page.live(b"big", "", 1)
        self.assertEqual(html.count("<tr data-pe="), PAGE_SIZE)
        self.assertIn("page 1 of 100", html)
        self.assertIn("10000 PEs", html)
        html = self.page.live(b"big", "", 100)
        self.assertEqual(html.count("<tr data-pe="), PAGE_SIZE)
        self.assertIn('data-pe="0010270f"', html)
        html = self.page.live(b"big", "0010270", 1)
        self.assertEqual(html.count("<tr data-pe="), 16)
        html = self.page.live(b"big", "10.0.3.7", 1)
        self.assertEqual(html.count("<tr data-pe="), 11)
        html = self.page.live(b"big", "00100307", 1)
        self.assertEqual(html.count("<tr data-pe="), 1)
        self.assertIn('data-pe="00100307"', html)

    def test_many_pools(self):
        for i in range(250):
            fill(self.service, b"pool-%03d" % i, 1)
        html = self.page.live(None, "", 3)
        self.assertEqual(html.count("<tr data-pool="), 50)
        self.assertIn("page 3 of 3", html)
        html = self.page.live(None, "pool-12", 1)
        self.assertEqual(html.count("<tr data-pool="), 10)

    def test_escaped(self):
        fill(self.service, b"<script>x</script>\xff", 1)
        html = self.page.live(None, "", 1)
        self.assertNotIn("<script>x", html)
        self.assertIn("&lt;script&gt;x&lt;/script&gt;\\xff", html)
        html = self.page.document(b"<b>", "\"><i>", "")
        self.assertNotIn("<b>", html.split("<div id=\"live\"")[0].split("</title>")[1])
        self.assertNotIn('"><i>', html)

    def test_unknown_pool(self):
        html = self.page.live(b"gone", "", 1)
        self.assertIn("No such pool", html)


class EventStreamTests(unittest.TestCase):
    """
    /events: a registration reaches a live client within a second.
    """

    setUp = test_web.RegistrarHTTPTests.setUp
    connect = test_web.RegistrarHTTPTests.connect

    @defer.inlineCallbacks
    def test_change_streamed(self):
        got = defer.Deferred()
        received = []

        class Stream(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")

            def dataReceived(self, data):
                received.append(data)
                if b"event: change" in b"".join(received) and not got.called:
                    got.callback(b"".join(received))

        stream = Stream()
        yield connectProtocol(TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.service.monitor.http_port.getHost().port), stream)
        self.addCleanup(stream.transport.loseConnection)
        client = yield self.connect()
        yield client.request(registration(b"live", 0x77), RegistrationResponse)
        data = yield got.addTimeout(TIMEOUT, reactor)
        self.assertIn(b"text/event-stream", data)
        self.assertIn(b"event: hello", data)
        self.assertIn(b'"kind":"registration"', data)
        self.assertIn(b'"pe":"00000077"', data)
        self.assertEqual(len(self.service.monitor.hub.clients), 1)
