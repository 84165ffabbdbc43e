"""
Loopback integration: PEs in separate processes killed with SIGKILL while
a pool user is served, and a home registrar killed under a PE.

What may be lost: a message the session layer had already handed to the
connection of the PE that died (the services draft section 4.4 makes
failover best effort; its 4.5.2 leaves recovery to the application).
Everything handed to the session layer while no connection was up is
sent to the new PE, after the Cookie Echo and the failover callback.
"""
import re
import signal

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from rserpool.examples import transfer
from rserpool.pu import PoolClientEndpoint, PoolUser
from tests.helpers import eventually
from tests.test_cli_pool import RegistrarMixin, spawn

#: A registrar process listening for ASAP on the endpoint its argument
#: names; it prints "ready PORT" once it listens.
_REGISTRAR = (
    "import sys\n"
    "from twisted.internet import reactor\n"
    "from rserpool.services import RegistrarService, make_config\n"
    "service = RegistrarService(make_config(), asap_endpoints=[sys.argv[1]])\n"
    "service.startService()\n"
    "service.ready.addCallback(lambda ports: print('ready', ports[0].getHost().port, flush=True))\n"
    "reactor.run()\n"
)


class Counter(Protocol):
    """
    Sends numbered requests one after the other.
    """

    def __init__(self):
        self.replies = []
        self.failovers = 0
        self.next = 0

    def connectionMade(self):
        self.send()

    _call = None

    def send(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.transport.write(b"%d" % self.next)
        self.next += 1

    def sessionFailover(self, pe):
        self.failovers += 1
        # The request in flight may be lost with the old PE: ask again.
        self.next = max(self.replies) + 1 if self.replies else 0
        self.send()

    def dataReceived(self, data):
        self.replies.append(int(data))
        if self.next < 200:
            # Paced, so that the PEs are killed mid-session.
            self._call = reactor.callLater(0.005, self.send)


class ProcessFailoverTests(RegistrarMixin, unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def start_pes(self, n, service, handle, *more):
        self.procs = {}
        for i in range(n):
            pe_id = 0x1000 + i
            proc = self.start_pe(service, handle, "--identifier", "%08x" % pe_id, *more)
            self.procs[pe_id] = proc
        for proc in self.procs.values():
            yield proc.wait_for(b"registered")

    @defer.inlineCallbacks
    def test_transfer_survives_sigkill(self):
        yield self.start_registrar()
        yield self.start_pes(3, "transfer", "TransferPool", "--chunk-size", "2048",
                             "--chunk-delay", "0.01")
        pu = PoolUser(reactor, registrars=[self.asap])
        self.addCleanup(pu.close)
        factory = transfer.TransferClientFactory("pattern-300000")
        client = yield PoolClientEndpoint(reactor, pu, "TransferPool").connect(factory)
        session = client.transport._session
        yield eventually(lambda: len(client.received) > 60000, "60,000 bytes of the transfer")
        victim = session.pe.identifier
        self.procs[victim].kill(signal.SIGKILL)
        data = yield factory.done
        # Byte-exact; and the new PE resumed from the cookie: without the
        # Cookie Echo arriving before the PU's RESUME it would have refused
        # ("ERR bad request") and the transfer would have failed.
        self.assertEqual(data, transfer.pattern(300000))
        self.assertEqual(client.failovers, 1)
        self.assertNotIn(victim, session.history[1:])
        yield eventually(lambda: session.link is None, "the session to close")

    @defer.inlineCallbacks
    def test_echo_sessions_survive_sigkills(self):
        yield self.start_registrar()
        yield self.start_pes(3, "echo", "EchoPool")
        pu = PoolUser(reactor, registrars=[self.asap])
        self.addCleanup(pu.close)
        client = yield PoolClientEndpoint(reactor, pu, "EchoPool").connect(
            Factory.forProtocol(Counter))
        session = client.transport._session
        def state():
            return (len(client.replies), client.replies[-3:], session.history, session.core.state,
                    list(session.core.pending), client.next)

        for limit in (50, 120):
            yield eventually(lambda: len(client.replies) > limit,
                             lambda: "%d replies: %r" % (limit + 1, state()))
            self.procs[session.pe.identifier].kill(signal.SIGKILL)
        yield eventually(lambda: len(set(client.replies)) >= 200,
                         lambda: "200 distinct replies: %r" % (state(),))
        self.assertEqual((client.failovers, client.transport.failovers), (2, 2))
        # Nothing lost, in order; a request both kept by the session layer
        # during the failover and re-issued by the failover callback is
        # answered twice (the application asked twice).
        self.assertEqual(sorted(set(client.replies)), list(range(200)))
        self.assertEqual(client.replies, sorted(client.replies))
        self.assertEqual(len(set(session.history)), 3)
        client.transport.loseConnection()
        yield eventually(lambda: session.link is None, "the session to close")

    @defer.inlineCallbacks
    def test_home_registrar_killed(self):
        # Two registrars as processes; the PE's home one is SIGKILLed; the
        # PE hunts and registers at the other, where a PU finds it.
        ports = []
        registrars = []
        for _ in range(2):
            proc = spawn(self, "-c", _REGISTRAR, "tcp:0:interface=127.0.0.1", module=None)
            registrars.append(proc)
            ready = yield proc.wait_for_match(re.compile(rb"ready (\d+)"))
            ports.append(int(ready.group(1)))
        asap = ["tcp:127.0.0.1:%d" % p for p in ports]
        pe = spawn(self, "pe", "--handle", "HomePool", "--registrar", asap[0], "--registrar",
                   asap[1], "--identifier", "00002000", "echo")
        yield pe.wait_for(b"registered")
        registrars[0].kill(signal.SIGKILL)
        yield registrars[0].ended
        pu = PoolUser(reactor, registrars=[asap[1]])
        self.addCleanup(pu.close)

        @defer.inlineCallbacks
        def found():
            try:
                infos = yield pu.resolve("HomePool")
            except Exception:
                infos = []
            return any(i.identifier == 0x2000 for i in infos)

        yield eventually(found, "the PE to re-register at the surviving registrar", step=0.05)
