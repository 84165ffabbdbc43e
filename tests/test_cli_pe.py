"""
``rserpool pe`` as a user meets it: no address options, and every problem
printed without C{-v}, once, with its cause by name and what to do.
"""
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from rserpool.asap.scope import Scope
from rserpool.services import RegistrarService, make_config

from tests.helpers import spawn


class PEProblemTests(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def registrar(self, **kw):
        registrar = RegistrarService(make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"],
                                     **kw)
        registrar.startService()
        ports = yield registrar.ready
        self.addCleanup(registrar.stopService)
        return registrar, "tcp:127.0.0.1:%d" % ports[0].getHost().port

    @defer.inlineCallbacks
    def test_final_rejection(self):
        # A registrar that accepts site-local addresses and wider (what a
        # registrar on the wildcard address accepts) refuses a PE that
        # reaches it over loopback: the PE exits 1 with one line saying why
        # and what to do, and does not claim to deregister.
        registrar, asap = yield self.registrar(min_address_scope=Scope.SITE_LOCAL)
        pe = spawn(self, "pe", "--handle", "EchoPool", "--registrar", asap, "echo")
        code = yield pe.ended
        self.assertEqual(code, 1)
        self.assertEqual(pe.out, b"")
        lines = pe.err.decode().splitlines()
        self.assertEqual(len(lines), 1, pe.err)
        self.assertTrue(lines[0].startswith(
            "rserpool pe: registration in pool 'EchoPool' rejected by %s: INVALID_VALUES "
            "(cause 0x0003); this PE reaches the registrar over loopback, so it registered "
            "127.0.0.1" % asap), lines[0])
        self.assertEqual(len(registrar.registrar.handlespace), 0)

    @defer.inlineCallbacks
    def test_unreachable_then_registered(self):
        # The first registrar is not there: said once without -v; the PE
        # goes on to the second, registers its address there (it serves on
        # every address, and registers the one it reaches the registrar
        # from).
        closed = "tcp:127.0.0.1:1"
        registrar, asap = yield self.registrar()
        pe = spawn(self, "pe", "--handle", "EchoPool", "--registrar", closed,
                   "--registrar", asap, "echo")
        out = yield pe.wait_for(b"registered")
        self.assertRegex(out.decode(), r"^registered [0-9a-f]{8} in EchoPool: tcp 127\.0\.0\.1:\d+ "
                                       r"enhanced\n$")
        self.assertEqual(
            pe.err.decode(),
            "rserpool pe: cannot register at %s: connection refused; trying the other "
            "registrars\n" % closed)
        # It serves on every address: another loopback address reaches it.
        port = int(out.split(b":")[-1].split()[0])
        connected = yield TCP4ClientEndpoint(reactor, "127.0.0.2", port).connect(
            Factory.forProtocol(Protocol))
        connected.transport.loseConnection()
