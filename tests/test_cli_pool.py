"""
Tests for ``rserpool resolve``, ``pe``, ``terminal`` and ``dump``, run as
separate processes against registrars on loopback.
"""
import io
import ipaddress
import os
import re
import signal

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface import implementer

from rserpool.cli import build_parser, main, transport_text
from rserpool.codes import PolicyType
from rserpool.services import RegistrarService, make_config
from rserpool.interfaces import IMessageReceiver
from rserpool.transport.tcp import MessageStreamFactory
from rserpool.wire import (
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    ListRequest,
    ListResponse,
    Policy,
    PoolElement,
    SCTPTransport,
    TCPTransport,
)
from tests.helpers import refused_port, spawn

LINE = re.compile(r"^[0-9a-f]{8} tcp 127\.0\.0\.1:\d+ RoundRobin$")


class ParserTests(unittest.TestCase):
    def test_forms(self):
        parser = build_parser()
        args = parser.parse_args(["resolve", "EchoPool", "--registrar", "tcp:127.0.0.1:1", "--items", "4"])
        self.assertEqual((args.handle, args.registrar, args.items), ("EchoPool", ["tcp:127.0.0.1:1"], 4))
        args = parser.parse_args(["pe", "--handle", "P", "--policy", "WeightedRandom:3", "--port", "7", "echo"])
        self.assertEqual((args.service, args.port, args.policy), ("echo", 7, "WeightedRandom:3"))
        args = parser.parse_args(["terminal", "P"])
        self.assertEqual(args.registrar, None)
        args = parser.parse_args(["dump", "--registrar", "tcp:127.0.0.1:9901"])
        self.assertEqual(args.registrar, "tcp:127.0.0.1:9901")


class RegistrarMixin:
    @defer.inlineCallbacks
    def start_registrar(self, enrp=False):
        self.registrar = RegistrarService(
            make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"],
            enrp_endpoint="tcp:0:interface=127.0.0.1" if enrp else None)
        self.registrar.startService()
        ports = yield self.registrar.ready
        self.addCleanup(self.registrar.stopService)
        self.asap = "tcp:127.0.0.1:%d" % ports[0].getHost().port
        if enrp:
            self.enrp = "tcp:127.0.0.1:%d" % ports[1].getHost().port

    def start_pe(self, service="echo", handle="EchoPool", *more):
        proc = spawn(self, "pe", "--handle", handle, "--registrar", self.asap, *more, service)
        return proc


class CommandTests(RegistrarMixin, unittest.TestCase):
    timeout = 25

    @defer.inlineCallbacks
    def test_resolve_pe_terminal(self):
        yield self.start_registrar()
        pes = [self.start_pe()]
        yield pes[0].wait_for(b"registered")
        # One pool takes one transport use: a Basic Mode PE is refused.
        pes.append(self.start_pe("echo", "EchoPool", "--mode", "basic"))
        code = yield pes[1].ended
        self.assertEqual(code, 1)
        self.assertIn(b"INCONSISTENT_DATA_CONTROL_CONFIGURATION", pes[1].err)
        pes = [pes[0], self.start_pe()]
        yield pes[1].wait_for(b"registered")

        resolve = spawn(self, "resolve", "EchoPool", "--registrar", self.asap)
        code = yield resolve.ended
        self.assertEqual(code, 0, resolve.err)
        lines = resolve.out.decode().splitlines()
        self.assertEqual(len(lines), 2)
        for line in lines:
            self.assertRegex(line, LINE)

        terminal = spawn(self, "terminal", "EchoPool", "--registrar", self.asap, "--wait", "0.5",
                         stdin=b"hello\nworld\n")
        code = yield terminal.ended
        self.assertEqual((code, terminal.out), (0, b"hello\nworld\n"), terminal.err)

        # SIGTERM: the PE deregisters.
        pe_id = int(pes[0].out.split()[1], 16)
        pes[0].kill(signal.SIGTERM)
        yield pes[0].ended.addTimeout(10, reactor)
        self.assertIn(b"deregistered", pes[0].out)
        self.assertIsNone(self.registrar.registrar.handlespace.get(b"EchoPool", pe_id))

    @defer.inlineCallbacks
    def test_resolve_unknown_handle(self):
        yield self.start_registrar()
        resolve = spawn(self, "resolve", "NoSuchPool", "--registrar", self.asap)
        code = yield resolve.ended
        self.assertEqual(code, 1)
        self.assertEqual(resolve.err, b"rserpool resolve: unknown pool handle 'NoSuchPool'\n")

    @defer.inlineCallbacks
    def test_resolve_no_registrar(self):
        nobody = "tcp:127.0.0.1:%d" % refused_port(self)
        resolve = spawn(self, "resolve", "EchoPool", "--registrar", nobody)
        code = yield resolve.ended
        self.assertEqual(code, 1)
        self.assertEqual(len(resolve.err.splitlines()), 1)
        self.assertIn(b"no registrar answered", resolve.err)

    @defer.inlineCallbacks
    def test_daytime_terminal(self):
        yield self.start_registrar()
        pe = self.start_pe("daytime", "DayPool")
        yield pe.wait_for(b"registered")
        terminal = spawn(self, "terminal", "DayPool", "--registrar", self.asap, "--wait", "0.5",
                         stdin=b"")
        code = yield terminal.ended
        self.assertEqual(code, 0)
        self.assertTrue(terminal.out.endswith(b"-UTC\r\n"), terminal.out)

    @defer.inlineCallbacks
    def test_dump_registrar(self):
        yield self.start_registrar(enrp=True)
        pe = self.start_pe()
        out = yield pe.wait_for(b"registered")
        pe_id = out.split()[1].decode()
        dump = spawn(self, "dump", "--registrar", self.enrp)
        code = yield dump.ended
        self.assertEqual(code, 0, dump.err)
        self.assertEqual(dump.err, b"")
        self.assertIn(b"pool EchoPool: 1 PE(s)", dump.out)
        self.assertIn(("peer %08x %s\n" % (self.registrar.registrar.server_id,
                                            self.enrp.replace(":127", " 127", 1))).encode(),
                      dump.out)
        self.assertIn(pe_id.encode(), dump.out)
        # the mapping registered, not a fixed "tcp" (an sctp: endpoint says
        # "sctp": tests.test_interop_pingpong)
        self.assertRegex(out.decode(), r"registered %s in EchoPool: tcp 127\.0\.0\.1:\d+ enhanced"
                         % pe_id)


@implementer(IMessageReceiver)
class FakeENRP:
    """
    An ENRP server that answers with two pages (M flag on the first).
    """

    def __init__(self):
        self.requests = 0

    def connection_made(self, connection):
        pass

    def connection_lost(self, connection):
        pass

    def protocol_error(self, connection, error):
        pass

    def message_received(self, connection, message):
        policy = Policy.make(PolicyType.ROUND_ROBIN)

        def pe(n):
            return PoolElement(n, 0x77, 30000, TCPTransport(1000 + n, ("127.0.0.1",)), policy)

        if isinstance(message, ListRequest):
            connection.send(ListResponse(0x77, message.sender_id, ()))
        elif isinstance(message, HandleTableRequest):
            self.requests += 1
            if self.requests == 1:
                connection.send(HandleTableResponse(
                    0x77, message.sender_id, [HandleTableEntry(b"A", [pe(1), pe(2)])], True))
            else:
                connection.send(HandleTableResponse(
                    0x77, message.sender_id, [HandleTableEntry(b"A", [pe(3)]),
                                              HandleTableEntry(b"B", [pe(4)])], False))


class TransportTextTests(unittest.TestCase):
    def test_forms(self):
        self.assertEqual(transport_text(TCPTransport(9901, ("192.0.2.1",))), "tcp 192.0.2.1:9901")
        self.assertEqual(transport_text(SCTPTransport(9901, ("192.0.2.1", "2001:db8::1"))),
                         "sctp 192.0.2.1,[2001:db8::1]:9901")
        wild = TCPTransport(9901, ("0.0.0.0",))
        self.assertEqual(transport_text(wild), "tcp 0.0.0.0:9901")
        self.assertEqual(transport_text(wild, ipaddress.ip_address("10.213.0.1")),
                         "tcp 10.213.0.1:9901")


class DumpTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_paging(self):
        # RFC 5353 section 3.2.3: follow the M flag.
        fake = FakeENRP()
        port = reactor.listenTCP(0, MessageStreamFactory(fake, "enrp"), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        dump = spawn(self, "dump", "--registrar", "tcp:127.0.0.1:%d" % port.getHost().port)
        code = yield dump.ended
        self.assertEqual(code, 0, dump.err)
        self.assertEqual(fake.requests, 2)
        text = dump.out.decode()
        self.assertIn("registrar 00000077: 2 pool(s), 4 PE(s)", text)
        self.assertIn("pool A: 3 PE(s)", text)
        self.assertIn("00000004 tcp 127.0.0.1:1004 RoundRobin home=00000077", text)
        # closing after a complete dump is no failure (it used to print
        # "closed the connection before the handle table was complete")
        self.assertEqual(dump.err, b"")

    @defer.inlineCallbacks
    def test_no_enrp(self):
        nobody = "tcp:127.0.0.1:%d" % refused_port(self)
        dump = spawn(self, "dump", "--registrar", nobody)
        code = yield dump.ended
        self.assertEqual(code, 1)
        self.assertIn(b"cannot reach", dump.err)


class SecuredCommandTests(unittest.TestCase):
    """
    The commands over TLS-PSK: a registrar with --psk-keys-like settings,
    C{rserpool pe} serving on a C{psk:} endpoint, C{rserpool terminal
    --keys} talking to it.
    """

    timeout = 25

    @defer.inlineCallbacks
    def test_pe_terminal(self):
        from rserpool.transport.psk import PSKEndpoints

        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("pe-1 {}\npu-1 {}\n".format("ab" * 32, "cd" * 32))
        os.chmod(path, 0o600)
        keys = path.replace("\\", "\\\\").replace(":", "\\:")
        registrar = RegistrarService(
            make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"], psk=PSKEndpoints(path))
        registrar.startService()
        ports = yield registrar.ready
        self.addCleanup(registrar.stopService)
        asap = "psk:127.0.0.1:{}:keys={}:identity=".format(ports[0].getHost().port, keys)
        pe = spawn(self, "pe", "--handle", "SecureEcho", "--registrar", asap + "pe-1",
                   "--endpoint", "psk:0:interface=127.0.0.1:keys=" + keys, "echo")
        yield pe.wait_for(b"registered")
        terminal = spawn(self, "terminal", "SecureEcho", "--registrar", asap + "pu-1",
                         "--keys", path, "--identity", "pu-1", "--wait", "0.5",
                         stdin=b"hello\n")
        code = yield terminal.ended
        self.assertEqual((code, terminal.out), (0, b"hello\n"), terminal.err)
        pe.kill(signal.SIGTERM)
        yield pe.ended.addTimeout(10, reactor)

    def test_terminal_key_errors(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["terminal", "P", "--identity", "pu-1"], out, err), 2)
        self.assertIn("--identity needs --keys", err.getvalue())
        err = io.StringIO()
        self.assertEqual(main(["terminal", "P", "--keys", self.mktemp()], out, err), 2)
        self.assertIn("cannot read key file", err.getvalue())
