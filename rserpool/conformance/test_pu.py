"""
A pool user over the wire (RFC 5352 sections 3.3 and 3.5): the suite is
its registrar (L{rserpool.conformance.harness}), answers its Handle
Resolutions with PEs of its choosing, and checks that the PU resolves the
pool handle, reports a PE it cannot reach with Endpoint Unreachable, and
resolves again to reach another.

Target: C{RSERPOOL_TARGET_PU}, the command that starts the PU, which
connects to a PE of the pool at once and keeps trying, e.g.::

    RSERPOOL_TARGET_PU='rserpool terminal --registrar {registrar}
        --mode basic {handle}'

C{{registrar}} (C{{registrar_hostport}}) and C{{handle}} as for
C{RSERPOOL_TARGET_PE}.  The PEs the harness hands out serve plain TCP on
C{RSERPOOL_TARGET_BIND} (default 127.0.0.1): a dead one (a port nothing
listens on) and a live one that accepts connections.
"""
import socket

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol

from rserpool.codes import PolicyType
from rserpool.conformance.case import ConformanceCase, Prerequisite
from rserpool.conformance.client import NoAnswer
from rserpool.conformance.harness import HarnessRegistrar, PEProcess, fill
from rserpool.wire import (
    EndpointUnreachable,
    HandleResolution,
    Policy,
    PoolElement,
    TCPTransport,
)


class _LivePE(Factory):
    """
    A PE that accepts connections and counts them.
    """

    noisy = False

    def __init__(self):
        self.connections = 0
        self.received = b""
        self.reached = defer.Deferred()

    def buildProtocol(self, addr):
        pe = self

        class Echo(Protocol):
            def connectionMade(self):
                pe.connections += 1
                if not pe.reached.called:
                    pe.reached.callback(None)

            def dataReceived(self, data):
                pe.received += data
                self.transport.write(data)

        return Echo()


class PUCase(ConformanceCase):
    needs = "pu"

    def host(self):
        return self.target.bind or "127.0.0.1"

    def element(self, port, identifier=None):
        """
        A Pool Element at C{port} of the harness's address (TCP, Round
        Robin).
        """
        import ipaddress

        return PoolElement(
            identifier if identifier is not None else self.pe_id(), 0, 60000,
            TCPTransport(port, (ipaddress.ip_address(self.host()),)),
            Policy.make(PolicyType.ROUND_ROBIN))

    def dead_port(self):
        """
        A TCP port of the harness's address that nothing listens on.
        """
        s = socket.socket(socket.AF_INET6 if ":" in self.host() else socket.AF_INET)
        try:
            s.bind((self.host(), 0))
            return s.getsockname()[1]
        finally:
            s.close()

    @defer.inlineCallbacks
    def live_pe(self):
        """
        A live PE: listening, stopped after the test.

        @return: a L{Deferred} firing with C{(the PE, its port)}.
        """
        pe = _LivePE()
        port = yield serverFromString(
            self.reactor, "tcp:0:interface=%s" % self.host().replace(":", "\\:")).listen(pe)
        self.addCleanup(port.stopListening)
        return pe, port.getHost().port

    @defer.inlineCallbacks
    def start_pu(self, answers):
        """
        The harness's registrar, answering the n-th Handle Resolution (from
        1) with C{answers(n)}, and the PU under test, told of it.

        @return: a L{Deferred} firing with C{(registrar, handle)}.
        """
        handle = self.handle()
        r = HarnessRegistrar(self.reactor, self.rng.getrandbits(32) or 1,
                             self.target.pe_mapping, self.host(), "registrar")
        r.resolver = lambda _handle, n: answers(n) if _handle == handle else ()
        try:
            yield r.start()
        except Exception as e:
            raise Prerequisite("the harness cannot listen: %s" % (e,))
        self.addCleanup(r.stop)
        try:
            argv = fill(self.target.pu, handle, [r])
        except (KeyError, IndexError, ValueError) as e:
            raise Prerequisite("RSERPOOL_TARGET_PU: %s" % (e,))
        process = PEProcess(self.reactor, argv, name="PU").start()
        self.addCleanup(process.stop)
        self.process = process
        return r, handle

    def expect(self, registrar, match, what):
        """
        The next C{match} at the harness's registrar, within
        C{RSERPOOL_TARGET_PE_WAIT}; the PU's output in the failure.
        """
        d = registrar.inbox.expect(match, self.target.pe_wait, what)

        def explain(failure):
            failure.trap(NoAnswer)
            raise NoAnswer("%s%s" % (failure.getErrorMessage(), self.process.describe()))

        return d.addErrback(explain)


class ResolutionTests(PUCase):
    """
    RFC 5352 section 3.3: Handle Resolution.
    """

    @defer.inlineCallbacks
    def test_resolves(self):
        """
        RFC 5352 §3.3 MUST: a PU that wants a PE of a pool asks its
        registrar with a Handle Resolution naming the pool handle.
        """
        live, port = yield self.live_pe()
        element = self.element(port)
        registrar, handle = yield self.start_pu(lambda n: (element,))
        got = yield self.expect(registrar, HandleResolution, "Handle Resolution")
        self.assertEqual(got.pool_handle, handle)


class UnreachableTests(PUCase):
    """
    RFC 5352 section 3.5: a PE the PU cannot reach.
    """

    @defer.inlineCallbacks
    def dead_then_live(self):
        """
        The registrar answers the first Handle Resolution with a dead PE
        only, every later one with a live PE.

        @return: a L{Deferred} firing with C{(registrar, handle, the dead
            Pool Element, the live PE)}.
        """
        live, port = yield self.live_pe()
        dead = self.element(self.dead_port())
        alive = self.element(port)
        registrar, handle = yield self.start_pu(lambda n: (dead,) if n == 1 else (alive,))
        return registrar, handle, dead, live

    @defer.inlineCallbacks
    def test_reports(self):
        """
        RFC 5352 §3.5 SHOULD: a PU that cannot reach a PE its registrar
        gave it reports it: an Endpoint Unreachable naming the pool handle
        and that PE's identifier.
        """
        registrar, handle, dead, _ = yield self.dead_then_live()
        got = yield self.expect(registrar, EndpointUnreachable, "Endpoint Unreachable")
        self.assertEqual(got.pool_handle, handle)
        self.assertEqual(got.identifier, dead.identifier)

    @defer.inlineCallbacks
    def test_resolvesAgain(self):
        """
        RFC 5352 §3.5 SHOULD: a PU whose only PE is unreachable drops it and
        resolves the pool handle again, and reaches a PE of the new answer.
        """
        registrar, handle, dead, live = yield self.dead_then_live()
        yield self.expect(registrar, HandleResolution, "Handle Resolution")
        yield self.expect(registrar, HandleResolution, "a second Handle Resolution")
        try:
            yield live.reached.addTimeout(self.target.pe_wait, self.reactor)
        except defer.TimeoutError:
            self.fail("the PU did not connect to the PE of the second answer%s"
                      % self.process.describe())
