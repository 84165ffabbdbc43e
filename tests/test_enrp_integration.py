"""
Multi-process ENRP test over loopback: three registrars started with
C{twistd -n enrp}, 100 PEs (raw TCP clients in one child process) spread
over them, one registrar killed with SIGKILL.  Within the configured
detection plus takeover time every PE is owned by a live registrar in
every survivor's handlespace, every survivor resolves every PE, and no PE
is lost.
"""
import json
import signal

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from rserpool.wire import (
    ENRP,
    ITEMS_MAX,
    HandleResolution,
    HandleResolutionResponse,
    HandleTableRequest,
    HandleTableResponse,
    StreamDecoder,
    encode,
)

from tests.helpers import TWISTD, eventually, free_port, listening_port, spawn

#: Fast ENRP timers for the test (seconds).
TIMERS = {
    "peer-heartbeat-cycle": 0.3,
    "peer-max-time-last-heard": 1.0,
    "peer-max-time-no-response": 1.0,
    "takeover-expiry": 1.0,
    "mentor-discovery-timeout": 0.5,
}
#: Detection (last heard + no response, after a heartbeat cycle with
#: jitter) plus takeover expiry: the bound on SIGKILL to adoption.
BOUND = (TIMERS["peer-heartbeat-cycle"] * 1.125 + TIMERS["peer-max-time-last-heard"]
         + TIMERS["peer-max-time-no-response"] + TIMERS["takeover-expiry"])
#: Scheduling slack for three Python processes on a loaded machine.
SLACK = 2.0
PES = 100
POOLS = 4

#: The PE swarm: one process, PES raw clients.  Every PE registers at
#: registrar (index % 3), answers Endpoint Keep Alives, and when its
#: connection drops re-registers at the next registrar that accepts a
#: connection: at once (even PE ids, PE-side hunting) or after a delay
#: (odd ids, like a PE waiting for its new home's Keep Alive with H).
SWARM = r"""
import json, sys
from twisted.internet import reactor, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from rserpool.wire import (Registration, PoolElement, Policy, TCPTransport, StreamDecoder,
                           EndpointKeepAlive, EndpointKeepAliveAck, RegistrationResponse, encode)
import ipaddress
ports, count, pools, delay = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
# With a fifth argument "all", every PE waits before re-registering.
hunt_at_once = len(sys.argv) < 6 or sys.argv[5] != "all"
LOOP = ipaddress.ip_address("127.0.0.1")
registered = set()

class Conn(protocol.Protocol):
    def __init__(self, pe):
        self.pe, self.decoder = pe, StreamDecoder("asap")
    def connectionMade(self):
        self.transport.write(encode(Registration(self.pe.handle, PoolElement(
            self.pe.pe_id, 0, 60000, TCPTransport(7000 + self.pe.pe_id % 1000, (LOOP,)),
            Policy(1, ())))))
    def dataReceived(self, data):
        for m in self.decoder.feed(data):
            if isinstance(m, EndpointKeepAlive):
                self.transport.write(encode(EndpointKeepAliveAck(m.pool_handle, self.pe.pe_id)))
            elif isinstance(m, RegistrationResponse) and not m.reject:
                registered.add(self.pe.pe_id)
                if len(registered) == count:
                    print("registered", flush=True)
    def connectionLost(self, reason):
        self.pe.lost()

class PE:
    def __init__(self, pe_id, index):
        self.pe_id, self.index = pe_id, index
        self.handle = b"pool%d" % (pe_id % pools)
    def connect(self):
        port = ports[self.index % len(ports)]
        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1), Conn(self))
        d.addErrback(self.failed)
    def failed(self, f):
        self.index += 1
        reactor.callLater(0.1, self.connect)
    def lost(self):
        self.index += 1
        at_once = hunt_at_once and self.pe_id % 2 == 0
        reactor.callLater(0.0 if at_once else delay, self.connect)

for i in range(count):
    PE(0x1000 + i, i).connect()
reactor.run()
"""


class _Client(protocol.Protocol):
    def __init__(self, protocol_name):
        self.decoder = StreamDecoder(protocol_name)
        self.messages = []
        self.waiting = None

    def dataReceived(self, data):
        self.messages.extend(self.decoder.feed(data))
        if self.waiting is not None and self.messages:
            d, self.waiting = self.waiting, None
            d.callback(self.messages.pop(0))

    def ask(self, message):
        self.transport.write(encode(message))
        if self.messages:
            return defer.succeed(self.messages.pop(0))
        self.waiting = defer.Deferred()
        return self.waiting.addTimeout(5, reactor)


@defer.inlineCallbacks
def dump(port):
    """
    The handlespace of the registrar at ENRP port C{port}, as
    C{{(handle, pe id): home}}, fetched as RSPLIB's hsdump does.
    """
    client = _Client(ENRP)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2), client)
    try:
        out = {}
        for _ in range(1000):
            response = yield client.ask(HandleTableRequest(0x7E57, 0))
            if not isinstance(response, HandleTableResponse):
                continue
            for entry in response.entries:
                for pe in entry.pool_elements:
                    out[(entry.pool_handle, pe.identifier)] = pe.home_registrar
            if not response.more_to_send:
                break
        return out
    finally:
        client.transport.loseConnection()


@defer.inlineCallbacks
def resolve_all(port, handle):
    client = _Client("asap")
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2), client)
    try:
        response = yield client.ask(HandleResolution(handle, items=ITEMS_MAX))
        assert isinstance(response, HandleResolutionResponse)
        return {pe.identifier for pe in response.pool_elements}
    finally:
        client.transport.loseConnection()


class SigkillTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_sigkill_registrar(self):
        # Each registrar names the others' ENRP endpoints with --peer, so
        # all but the first must have their port before they start: the
        # first listens on port 0, the others on ports that were free a
        # moment ago (free_port).  Every ASAP listener is on port 0.
        enrp = [None, free_port(), free_port()]
        asap = []
        registrars = []
        for i in range(3):
            args = ["-c", TWISTD, "-n", "--pidfile=",
                    "enrp", "--id", str(i + 1), "--quiet",
                    "--asap", "tcp:0:interface=127.0.0.1",
                    "--enrp", "tcp:%d:interface=127.0.0.1" % (enrp[i] or 0),
                    "--keep-alive-interval", "1", "--keep-alive-timeout", "1"]
            for name, value in TIMERS.items():
                args += ["--" + name, str(value)]
            for j in range(3):
                if j != i:
                    args += ["--peer", "tcp:127.0.0.1:%d" % enrp[j]]
            registrar = spawn(self, *args, module=None, name="registrar %d" % (i + 1))
            registrars.append(registrar)
            asap.append((yield listening_port(registrar, "ASAP", timeout=30)))
            enrp[i] = yield listening_port(registrar, "ENRP", timeout=30)
        for p in registrars:
            yield p.wait_for(b"ENRP server", 30)

        swarm = spawn(self, "-c", SWARM, json.dumps(asap), str(PES), str(POOLS), str(BOUND + 3),
                      module=None, name="swarm")
        yield swarm.wait_for(b"registered", 30)

        def complete(view, owners):
            return len(view) == PES and set(view.values()) <= owners

        @defer.inlineCallbacks
        def converged(ports, owners):
            views = yield defer.gatherResults([dump(p) for p in ports])
            if all(complete(v, owners) for v in views) and all(v == views[0] for v in views):
                return views
            last[:] = views
            return None

        last = []

        def homes():
            return "every survivor to own every PE alike (their owners: %r)" % (
                [sorted(set(v.values())) for v in last],)

        views = yield eventually(lambda: converged(enrp, {1, 2, 3}), homes, step=0.1)
        victim_pes = [k for k, home in views[0].items() if home == 3]
        self.assertTrue(victim_pes)

        registrars[2].kill(signal.SIGKILL)
        t0 = reactor.seconds()
        yield registrars[2].ended

        @defer.inlineCallbacks
        def adopted():
            views = yield defer.gatherResults([dump(p) for p in enrp[:2]])
            last[:] = views
            return all(complete(v, {1, 2}) for v in views) and views

        views = yield eventually(adopted, lambda: "the survivors to adopt every PE (their "
                                 "owners: %r)" % ([sorted(set(v.values())) for v in last],),
                                 timeout=BOUND + SLACK, step=0.1)
        elapsed = reactor.seconds() - t0
        self.assertLess(elapsed, BOUND + SLACK)
        self.assertEqual(views[0], views[1])
        for port in asap[:2]:
            for k in range(POOLS):
                handle = b"pool%d" % k
                got = yield resolve_all(port, handle)
                want = {pe_id for (h, pe_id) in views[0] if h == handle}
                self.assertEqual(got, want)
        # The delayed PEs re-register after the takeover (the swarm prints
        # "registered" again for each registration once all were): still
        # nothing lost.
        yield eventually(lambda: swarm.out.count(b"registered\n") >= 1 + len(victim_pes),
                         "the %d PEs of the killed registrar to register again" % len(victim_pes),
                         timeout=BOUND + 3 + SLACK + 4, step=0.1)
        yield eventually(lambda: converged(enrp[:2], {1, 2}), homes, step=0.1)
