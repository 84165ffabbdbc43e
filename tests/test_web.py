"""
The registrar's HTTP listener (issue #16): /metrics scraped and parsed with
prometheus-client's own parser, each named metric holding what the test
caused; /healthz, /readyz, /api/v1/handlespace; the listener's limits
against slow and hostile clients, with a fake clock and over loopback.
"""
import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource

from rserpool import tap
from rserpool.codes import PolicyType
from rserpool.web.http import GuardedSite, HTTPLimits, StreamGuard
from rserpool.web.metrics import Histogram
from rserpool.wire import (
    HandleResolution,
    HandleResolutionResponse,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
    TCPTransport,
)

from tests.helpers import eventually

from .test_registrar_integration import RawClient

TIMEOUT = 10.0


@defer.inlineCallbacks
def get(url, headers=None):
    """
    GET C{url} on loopback: C{(code, headers, body)}.
    """
    from twisted.web.http_headers import Headers

    agent = Agent(reactor, connectTimeout=TIMEOUT)
    response = yield agent.request(b"GET", url.encode("ascii"),
                                   Headers(headers or {})).addTimeout(TIMEOUT, reactor)
    body = yield readBody(response).addTimeout(TIMEOUT, reactor)
    return response.code, response.headers, body


def samples(text):
    """
    Every sample of a Prometheus text exposition:
    C{{(name, frozenset(labels.items())): value}}.
    """
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found, name, **labels):
    return found[(name, frozenset(labels.items()))]


def registration(handle, pe_id, address="127.0.0.1", port=7000, policy=None):
    return Registration(handle, PoolElement(
        pe_id, 0, 30000, TCPTransport(port, (address,)),
        policy or Policy.make(PolicyType.ROUND_ROBIN)))


class RegistrarHTTPTests(unittest.TestCase):
    """
    A registrar from C{twistd enrp}'s options with C{--http}, on loopback.
    """

    @defer.inlineCallbacks
    def setUp(self):
        options = tap.Options()
        options.parseOptions([
            "--asap", "tcp:0:interface=127.0.0.1",
            "--enrp", "tcp:0:interface=127.0.0.1",
            "--http", "tcp:0:interface=127.0.0.1",
            "--id", "0x5eed",
            "--mentor-discovery-timeout", "0.3",
            "--max-hr-rate-per-source", "1",
            "--quiet",
        ])
        self.service = tap.makeService(options)
        self.service.monitor.metrics_cache = 0
        self.service.startService()
        self.addCleanup(self.service.stopService)
        yield self.service.ready
        self.port = self.service.asap_ports[0].getHost().port
        self.base = "http://127.0.0.1:%d" % self.service.monitor.http_port.getHost().port

    @defer.inlineCallbacks
    def connect(self):
        client = RawClient("asap", auto_ack=True)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        self.addCleanup(client.close)
        return client

    def wait_ready(self):
        @defer.inlineCallbacks
        def ready():
            code, _, _ = yield get(self.base + "/readyz")
            return code == 200

        return eventually(ready, "/readyz to answer 200", step=0.05)

    @defer.inlineCallbacks
    def test_metrics(self):
        """
        Registrations, a rejection, resolutions and rate-limited
        resolutions show in the scrape with the values the test caused.
        """
        yield self.wait_ready()
        client = yield self.connect()
        for pe_id in (1, 2, 3):
            answer = yield client.request(registration(b"web", pe_id, port=7000 + pe_id),
                                          RegistrationResponse)
            self.assertFalse(answer.reject)
        answer = yield client.request(registration(b"db", 4), RegistrationResponse)
        self.assertFalse(answer.reject)
        # Another policy in pool "web": Inconsistent Pooling Policy.
        answer = yield client.request(
            registration(b"web", 5, policy=Policy.make(PolicyType.LEAST_USED, load=0)),
            RegistrationResponse)
        self.assertTrue(answer.reject)
        # 1 a second per source, twice that at once: of 5 resolutions at
        # once, 3 are refused.
        for _ in range(5):
            client.send(HandleResolution(b"web"))
        answers = []
        for _ in range(5):
            answers.append((yield client.expect(HandleResolutionResponse)))
        refused = sum(1 for a in answers if a.error is not None)
        self.assertEqual(refused, 3)

        code, headers, body = yield get(self.base + "/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"text/plain", headers.getRawHeaders(b"content-type")[0])
        found = samples(body.decode("utf-8"))
        self.assertEqual(value(found, "rserpool_pools"), 2)
        self.assertEqual(value(found, "rserpool_pool_elements", pool="web"), 3)
        self.assertEqual(value(found, "rserpool_pool_elements", pool="db"), 1)
        self.assertEqual(value(found, "rserpool_pool_elements_owned"), 4)
        self.assertEqual(value(found, "rserpool_asap_messages_total",
                               direction="received", type="registration"), 5)
        self.assertEqual(value(found, "rserpool_asap_messages_total",
                               direction="sent", type="registration_response"), 5)
        self.assertEqual(value(found, "rserpool_asap_messages_total",
                               direction="received", type="handle_resolution"), 5)
        self.assertEqual(value(found, "rserpool_asap_messages_total",
                               direction="sent", type="handle_resolution_response"), 5)
        self.assertEqual(value(found, "rserpool_registrations_rejected_total",
                               cause="inconsistent_pooling_policy"), 1)
        self.assertEqual(value(found, "rserpool_registrations_rejected_total",
                               cause="lack_of_resources"), 0)
        self.assertEqual(value(found, "rserpool_rate_limited_total",
                               kind="handle_resolution"), 3)
        self.assertEqual(value(found, "rserpool_handle_resolution_seconds_count"), 5)
        self.assertEqual(value(found, "rserpool_handle_resolution_seconds_bucket", le="+Inf"), 5)
        self.assertGreater(value(found, "rserpool_handle_resolution_seconds_sum"), 0)
        self.assertEqual(value(found, "rserpool_enrp_peers"), 0)
        self.assertEqual(value(found, "rserpool_enrp_synchronized"), 1)
        self.assertEqual(value(found, "rserpool_takeovers_total", outcome="done"), 0)
        self.assertEqual(value(found, "rserpool_registrar_info", id="00005eed"), 1)
        listener = "asap tcp 127.0.0.1:%d" % self.port
        self.assertEqual(value(found, "rserpool_connections", listener=listener), 1)
        http = "http tcp 127.0.0.1:%d" % self.service.monitor.http_port.getHost().port
        self.assertEqual(value(found, "rserpool_connections", listener=http), 1)

        # The PEs leave with their connection: gauges follow, and the
        # removals are counted by reason.
        yield client.close()
        yield eventually(lambda: not len(self.service.registrar.handlespace),
                         "the PEs to leave with their connection")
        code, _, body = yield get(self.base + "/metrics")
        found = samples(body.decode("utf-8"))
        self.assertEqual(value(found, "rserpool_pools"), 0)
        self.assertEqual(value(found, "rserpool_pe_removals_total", reason="connection_lost"), 4)
        self.assertEqual(value(found, "rserpool_connections", listener=listener), 0)

    @defer.inlineCallbacks
    def test_collector_pauses(self):
        """
        The garbage collector's passes and how long they stopped the
        registrar are in the scrape: a full collection forced by the test
        shows as one more full pass, with its length.
        """
        import gc

        code, _, body = yield get(self.base + "/metrics")
        self.assertEqual(code, 200)
        before = samples(body.decode("utf-8"))
        full = value(before, "rserpool_gc_collections_total", generation="full")
        gc.collect()
        code, _, body = yield get(self.base + "/metrics")
        found = samples(body.decode("utf-8"))
        self.assertGreaterEqual(value(found, "rserpool_gc_collections_total", generation="full"),
                                full + 1)
        self.assertGreater(value(found, "rserpool_gc_pause_seconds_total", generation="full"), 0)
        self.assertGreater(value(found, "rserpool_gc_pause_longest_seconds", generation="full"), 0)

    @defer.inlineCallbacks
    def test_openmetrics(self):
        """
        A scraper asking for OpenMetrics gets it.
        """
        code, headers, body = yield get(
            self.base + "/metrics",
            {b"accept": [b"application/openmetrics-text; version=1.0.0"]})
        self.assertEqual(code, 200)
        self.assertIn(b"openmetrics", headers.getRawHeaders(b"content-type")[0])
        self.assertTrue(body.rstrip().endswith(b"# EOF"))

    @defer.inlineCallbacks
    def test_health(self):
        """
        /healthz is 200 while listening; /readyz once ENRP's mentor
        discovery is over.
        """
        code, _, body = yield get(self.base + "/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))
        code, _, body = yield get(self.base + "/readyz")
        self.assertEqual(code, 503)
        self.assertIn(b"mentor", body)
        yield self.wait_ready()
        code, _, body = yield get(self.base + "/readyz")
        self.assertEqual((code, body), (200, b"ready\n"))

    @defer.inlineCallbacks
    def test_api(self):
        """
        /api/v1/handlespace: the registrar, its pools and a page of PEs,
        selected by pool and filter.
        """
        client = yield self.connect()
        for pe_id in (0x10, 0x11):
            yield client.request(registration(b"web", pe_id, port=8000 + pe_id),
                                 RegistrationResponse)
        yield client.request(registration(b"db", 0x20), RegistrationResponse)
        code, headers, body = yield get(self.base + "/api/v1/handlespace")
        self.assertEqual(code, 200)
        data = json.loads(body)
        self.assertEqual(data["version"], 1)
        self.assertEqual(data["registrar"]["id"], "00005eed")
        self.assertEqual(data["registrar"]["pool_elements"], 3)
        self.assertEqual([p["handle"] for p in data["pools"]], ["db", "web"])
        self.assertEqual(data["pool_elements"]["total"], 3)
        items = data["pool_elements"]["items"]
        self.assertEqual([(i["pool"], i["id"]) for i in items],
                         [("db", "00000020"), ("web", "00000010"), ("web", "00000011")])
        pe = items[1]
        self.assertEqual(pe["addresses"], ["127.0.0.1"])
        self.assertEqual(pe["port"], 8000 + 0x10)
        self.assertEqual(pe["transport"], "tcp")
        self.assertEqual(pe["policy"], "RoundRobin")
        self.assertEqual(pe["home"], "00005eed")
        self.assertTrue(pe["owned"])
        self.assertEqual(pe["registration_life"], 30.0)

        code, _, body = yield get(self.base + "/api/v1/handlespace?pool=web&q=11&limit=5")
        data = json.loads(body)
        self.assertEqual([p["handle"] for p in data["pools"]], ["web"])
        self.assertEqual(data["pool_elements"]["total"], 1)
        self.assertEqual(data["pool_elements"]["items"][0]["id"], "00000011")

        code, _, body = yield get(self.base + "/api/v1/events")
        data = json.loads(body)
        self.assertEqual([(e["kind"], e["pool"], e["pe"]) for e in data["events"]],
                         [("registration", "web", "00000010"), ("registration", "web", "00000011"),
                          ("registration", "db", "00000020")])

    @defer.inlineCallbacks
    def test_slow_client(self):
        """
        A client sending one byte at a time is closed at the request
        deadline, and the registrar answers resolutions meanwhile.
        """
        self.service.monitor.site.limits = HTTPLimits(request_timeout=0.5)
        lost = defer.Deferred()

        class Slow(protocol.Protocol):
            def connectionLost(self, reason):
                lost.callback(None)

        slow = Slow()
        yield connectProtocol(TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.service.monitor.http_port.getHost().port), slow)
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200
        sent = [0]

        def drip():
            if sent[0] < len(request) and slow.transport.connected:
                slow.transport.write(request[sent[0]:sent[0] + 1])
                sent[0] += 1
                calls.append(reactor.callLater(0.05, drip))

        calls = [reactor.callLater(0, drip)]
        self.addCleanup(lambda: [c.cancel() for c in calls if c.active()])
        client = yield self.connect()
        yield client.request(registration(b"web", 1), RegistrationResponse)
        answer = yield client.request(HandleResolution(b"web"), HandleResolutionResponse)
        self.assertEqual(len(answer.pool_elements), 1)
        yield lost.addTimeout(TIMEOUT, reactor)
        # It had sent a few bytes of its request, not all.
        self.assertLess(sent[0], len(request))
        self.assertGreater(sent[0], 3)

    @defer.inlineCallbacks
    def test_page(self):
        """
        / is a plain page naming the pools, and a pool's view its PEs.
        """
        client = yield self.connect()
        yield client.request(registration(b"web", 0xabc), RegistrationResponse)
        code, headers, body = yield get(self.base + "/")
        self.assertEqual(code, 200)
        self.assertIn(b"text/html", headers.getRawHeaders(b"content-type")[0])
        self.assertIn(b'data-pool="web"', body)
        self.assertIn(b"00005eed", body)
        code, _, body = yield get(self.base + "/?pool=web")
        self.assertIn(b'data-pe="00000abc"', body)
        code, _, body = yield get(self.base + "/?pool=web&q=nothing&fragment=1")
        self.assertNotIn(b"<html", body)
        self.assertNotIn(b'data-pe="00000abc"', body)
        code, _, body = yield get(self.base + "/static/rserpool.js")
        self.assertEqual(code, 200)
        code, _, _ = yield get(self.base + "/static/")
        self.assertEqual(code, 404)


class HTTPStopTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_port_in_use(self):
        """
        An HTTP endpoint that cannot listen fails the registrar's start
        with one line.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint

        from rserpool.services import ListenFailed

        taken = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(protocol.Protocol))
        self.addCleanup(taken.stopListening)
        options = tap.Options()
        options.parseOptions(["--asap", "tcp:0:interface=127.0.0.1", "--enrp", "none",
                              "--http", "tcp:%d:interface=127.0.0.1" % taken.getHost().port])
        service = tap.makeService(options)
        service.exit_on_listen_failure = False
        service.startService()
        self.addCleanup(service.stopService)
        failure = yield self.assertFailure(service.ready, ListenFailed)
        self.assertIn("cannot listen for HTTP", str(failure))

    def test_bad_endpoint(self):
        options = tap.Options()
        from twisted.python import usage

        self.assertRaises(usage.UsageError, options.parseOptions, ["--http", "nonsense:1"])


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"

    def render_POST(self, request):
        return b"posted"


class GuardedSiteTests(unittest.TestCase):
    """
    The listener's limits, on a fake clock and fake transports.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.limits = HTTPLimits(request_timeout=10.0, idle_timeout=30.0, max_body=16,
                                 max_header_bytes=512, per_source=2, max_connections=3,
                                 stall_timeout=5.0, max_buffered=100)
        self.site = GuardedSite(Hello(), self.limits, self.clock)

    def connect(self, host="127.0.0.1"):
        channel = self.site.buildProtocol(IPv4Address("TCP", host, 40000))
        if channel is None:
            return None, None
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def test_one_byte_a_second(self):
        """
        One byte a second: aborted at the request deadline, however long
        the drip goes on.
        """
        channel, transport = self.connect()
        request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
        for i in range(9):
            channel.dataReceived(request[i:i + 1])
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(request[9:10])
        self.clock.advance(1)
        self.assertTrue(transport.disconnected or transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_silent_connection(self):
        """
        A connection that sends nothing is closed at the deadline too.
        """
        channel, transport = self.connect()
        self.clock.advance(10)
        self.assertTrue(transport.disconnected or transport.disconnecting)

    def test_request_answered(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())
        self.assertTrue(transport.value().endswith(b"hello"))
        # Kept alive, no deadline while idle (the idle timeout instead).
        self.clock.advance(20)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(11)
        self.assertTrue(transport.disconnecting)

    def test_headers_too_large(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 600 + b"\r\n\r\n")
        self.assertIn(b"400", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_body_too_large(self):
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        self.assertIn(b"413", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_chunked_body_too_large(self):
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        channel.dataReceived(b"40\r\n" + b"a" * 64 + b"\r\n")
        self.assertIn(b"413", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_small_body(self):
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
        self.assertTrue(transport.value().endswith(b"posted"))

    def test_connections_per_source(self):
        self.assertIsNotNone(self.connect()[0])
        self.assertIsNotNone(self.connect()[0])
        self.assertIsNone(self.connect()[0])
        self.assertIsNotNone(self.connect("127.0.0.2")[0])
        # In all: 3.
        self.assertIsNone(self.connect("127.0.0.3")[0])
        self.assertEqual(self.site.refused, 2)

    def test_rate(self):
        """
        Past the burst, requests wait their turn (rate a second, in order)
        unread; one that would wait past the request deadline gets 503.
        """
        self.site = GuardedSite(Hello(), HTTPLimits(rate=2, burst=2, request_timeout=1.0,
                                                    per_source=0), self.clock)
        answered = []
        for i in range(5):
            channel, transport = self.connect("127.0.0.%d" % (i + 1))
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answered.append(transport)
        done = [t.value().endswith(b"hello") for t in answered]
        self.assertEqual(done, [True, True, False, False, False])
        self.assertIn(b"503", answered[4].value())
        self.clock.advance(0.5)
        self.assertTrue(answered[2].value().endswith(b"hello"))
        self.assertFalse(answered[3].value().endswith(b"hello"))
        self.clock.advance(0.5)
        self.assertTrue(answered[3].value().endswith(b"hello"))
        self.assertEqual((self.site.delayed, self.site.busy), (2, 1))

    def test_released(self):
        channel, transport = self.connect()
        self.connect()
        channel.connectionLost(None)
        self.assertIsNotNone(self.connect()[0])


class StreamGuardTests(unittest.TestCase):
    def setUp(self):
        class Channel:
            transport = StringTransport()

        class Request:
            channel = Channel()
            written = []

            def registerProducer(self, producer, streaming):
                self.producer = producer

            def write(self, data):
                self.written.append(data)

        self.clock = task.Clock()
        self.request = Request()
        self.closed = []
        self.guard = StreamGuard(self.request, HTTPLimits(stall_timeout=5.0, max_buffered=100),
                                 self.clock, on_close=self.closed.append)

    def test_stalled_too_long(self):
        self.guard.write(b"a")
        self.guard.pauseProducing()
        self.clock.advance(4)
        self.assertTrue(self.guard.write(b"b"))
        self.clock.advance(1)
        self.assertTrue(self.guard.closed)
        self.assertEqual(self.closed, [self.guard])
        self.assertFalse(self.guard.write(b"c"))

    def test_too_much_waiting(self):
        self.guard.pauseProducing()
        self.assertTrue(self.guard.write(b"x" * 100))
        self.assertFalse(self.guard.write(b"x"))
        self.assertTrue(self.guard.closed)

    def test_reads_again(self):
        self.guard.pauseProducing()
        self.guard.write(b"x" * 90)
        self.guard.resumeProducing()
        self.clock.advance(10)
        self.assertTrue(self.guard.write(b"x" * 90))
        self.assertFalse(self.guard.closed)


class HistogramTests(unittest.TestCase):
    def test_buckets(self):
        h = Histogram((0.1, 1.0))
        for v in (0.05, 0.1, 0.5, 2.0):
            h.observe(v)
        family = h.family("x_seconds", "doc")
        got = {(s.name, s.labels.get("le")): s.value for s in family.samples}
        self.assertEqual(got[("x_seconds_bucket", "0.1")], 2)
        self.assertEqual(got[("x_seconds_bucket", "1.0")], 3)
        self.assertEqual(got[("x_seconds_bucket", "+Inf")], 4)
        self.assertEqual(got[("x_seconds_count", None)], 4)
        self.assertAlmostEqual(got[("x_seconds_sum", None)], 2.65)


class TLSFailureTests(unittest.TestCase):
    """
    rserpool_tls_handshake_failures_total{reason} of a registrar whose
    ASAP listener is TLS-PSK.
    """

    def keys(self, text):
        import os

        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    @defer.inlineCallbacks
    def test_failures_counted(self):
        from twisted.internet.endpoints import clientFromString

        server = self.keys("pe-1 %s\n" % bytes(range(32)).hex())
        wrong = self.keys("pe-1 %s\n" % bytes(range(100, 132)).hex())
        stranger = self.keys("stranger %s\n" % bytes(range(32)).hex())
        options = tap.Options()
        options.parseOptions(["--asap", "psk:0:interface=127.0.0.1:keys=" + server,
                              "--enrp", "none", "--http", "tcp:0:interface=127.0.0.1"])
        service = tap.makeService(options)
        service.monitor.metrics_cache = 0
        service.startService()
        self.addCleanup(service.stopService)
        yield service.ready
        port = service.asap_ports[0].getHost().port
        for keys in (wrong, stranger, wrong):
            lost = defer.Deferred()

            class Client(protocol.Protocol):
                def connectionLost(self, reason):
                    lost.callback(None)

            client = Client()
            yield connectProtocol(clientFromString(
                reactor, "psk:host=127.0.0.1:port=%d:keys=%s" % (port, keys)), client)
            client.transport.write(b"x")
            yield lost.addTimeout(TIMEOUT, reactor)
        base = "http://127.0.0.1:%d" % service.monitor.http_port.getHost().port

        @defer.inlineCallbacks
        def counted():
            code, _, body = yield get(base + "/metrics")
            found = samples(body.decode("utf-8"))
            return value(found, "rserpool_tls_handshake_failures_total",
                         reason="unknown_identity") and found

        found = yield eventually(counted, "the unknown identity's failure in /metrics")
        self.assertEqual(value(found, "rserpool_tls_handshake_failures_total", reason="bad_key"), 2)
        self.assertEqual(value(found, "rserpool_tls_handshake_failures_total",
                               reason="unknown_identity"), 1)
        self.assertEqual(value(found, "rserpool_tls_handshake_failures_total", reason="timeout"), 0)
