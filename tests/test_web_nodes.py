"""
Metrics of pool elements and pool users (issue #16): scraped over
loopback and parsed with prometheus-client's parser, each holding what
the test caused (registrations, a re-registration, a failover to another
registrar and its time; a pool user's resolutions, its Endpoint
Unreachable report and its session's failover).
"""
import signal

from twisted.internet import defer, protocol, reactor
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from rserpool.pe import PoolElementService
from rserpool.pu import PoolClientEndpoint, PoolUser
from rserpool.services import RegistrarService, make_config
from rserpool.web.nodes import NodeHTTP, PoolUserCollector
from tests.test_cli_pool import RegistrarMixin
from tests.helpers import eventually
from tests.test_failover_integration import Counter
from tests.test_web import get, samples, value


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class PoolElementMetricsTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def registrar(self):
        service = RegistrarService(make_config(keep_alive_interval=0.1),
                                   asap_endpoints=["tcp:0:interface=127.0.0.1"])
        service.startService()
        self.addCleanup(service.stopService)
        ports = yield service.ready
        return service, "tcp:127.0.0.1:%d" % ports[0].getHost().port

    @defer.inlineCallbacks
    def test_failover(self):
        r1, e1 = yield self.registrar()
        r2, e2 = yield self.registrar()
        pe = PoolElementService(b"P", Factory.forProtocol(Echo), endpoint="tcp:0:interface=127.0.0.1",
                                registrars=[e1, e2], reregistration_interval=0.2,
                                hunt_retry_delay=0.1, http="tcp:0:interface=127.0.0.1")
        pe.startService()
        self.addCleanup(pe.stopService)
        yield pe.registered
        base = "http://127.0.0.1:%d" % pe._http.port.getHost().port
        yield eventually(lambda: pe.machine.reregistrations >= 1, "a re-registration")
        code, _, body = yield get(base + "/healthz")
        self.assertEqual(code, 200)
        code, _, body = yield get(base + "/metrics")
        found = samples(body.decode("utf-8"))
        self.assertEqual(value(found, "rserpool_pe_registered"), 1)
        self.assertEqual(value(found, "rserpool_pe_registrations_total"), 1)
        self.assertGreaterEqual(value(found, "rserpool_pe_reregistrations_total"), 1)
        self.assertEqual(value(found, "rserpool_pe_failovers_total"), 0)
        self.assertEqual(value(found, "rserpool_pe_info", pool="P", pe="%08x" % pe.identifier), 1)

        # Its registrar goes away: the PE hunts and registers at the other.
        home, other = (r1, r2) if len(r1.registrar.handlespace) else (r2, r1)
        yield home.stopService()
        yield eventually(lambda: len(other.registrar.handlespace) == 1, "the PE at the other registrar")
        yield eventually(lambda: pe.monitor.failovers == 1, "the PE's failover")
        yield eventually(lambda: pe.home_registrar == other.registrar.server_id, "the new home")
        code, _, body = yield get(base + "/metrics")
        found = samples(body.decode("utf-8"))
        self.assertEqual(value(found, "rserpool_pe_failovers_total"), 1)
        self.assertEqual(value(found, "rserpool_pe_failover_seconds_count"), 1)
        self.assertLess(value(found, "rserpool_pe_failover_seconds_sum"), 10)
        self.assertEqual(value(found, "rserpool_pe_registrar_problems_total", kind="lost"), 1)
        self.assertEqual(value(found, "rserpool_pe_registrations_total"), 2)
        self.assertEqual(value(found, "rserpool_pe_home_registrar",
                               id="%08x" % other.registrar.server_id), 1)


class PoolUserMetricsTests(RegistrarMixin, unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_failover(self):
        yield self.start_registrar()
        procs = {}
        for pe_id in (0x1000, 0x1001):
            procs[pe_id] = self.start_pe("echo", "EchoPool", "--identifier", "%08x" % pe_id)
        for proc in procs.values():
            yield proc.wait_for(b"registered")
        pu = PoolUser(reactor, registrars=[self.asap])
        self.addCleanup(pu.close)
        http = NodeHTTP(reactor, [PoolUserCollector(pu)])
        port = yield http.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(http.stop)
        client = yield PoolClientEndpoint(reactor, pu, "EchoPool").connect(
            Factory.forProtocol(Counter))
        session = client.transport._session
        yield eventually(lambda: len(client.replies) > 20, "21 replies")
        procs[session.pe.identifier].kill(signal.SIGKILL)
        yield eventually(lambda: client.failovers == 1, "the client's failover")
        code, _, body = yield get("http://127.0.0.1:%d/metrics" % port.getHost().port)
        found = samples(body.decode("utf-8"))
        self.assertEqual(value(found, "rserpool_pu_failovers_total"), 1)
        self.assertEqual(value(found, "rserpool_pu_failover_seconds_count"), 1)
        self.assertEqual(value(found, "rserpool_pu_unreachable_reports_total"), 1)
        self.assertGreaterEqual(value(found, "rserpool_pu_resolutions_total"), 2)
        self.assertEqual(value(found, "rserpool_pu_resolution_failures_total"), 0)
        client.next = 10 ** 6
        if client._call is not None and client._call.active():
            client._call.cancel()
        client.transport.loseConnection()
        yield eventually(lambda: session.link is None, "the session's end")


class CommandTests(RegistrarMixin, unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_pe_http(self):
        """
        C{rserpool pe --http ENDPOINT} serves the PE's metrics.
        """
        from tests.helpers import listening_port

        yield self.start_registrar()
        # --verbose: the PE logs (on stderr) where its HTTP side listens.
        proc = self.start_pe("echo", "EchoPool", "--identifier", "00000abc", "--verbose",
                             "--http", "tcp:0:interface=127.0.0.1")
        port = yield listening_port(proc, "HTTP", stream="err")
        yield proc.wait_for(b"registered")
        code, _, body = yield get("http://127.0.0.1:%d/metrics" % port)
        self.assertEqual(code, 200)
        found = samples(body.decode("utf-8"))
        self.assertEqual(value(found, "rserpool_pe_info", pool="EchoPool", pe="00000abc"), 1)
        self.assertEqual(value(found, "rserpool_pe_registrations_total"), 1)
