"""
TLS with pre-shared keys (L{rserpool.transport.psk}): the key file, the
C{psk:} endpoint strings, handshakes on loopback, registrars, PEs and PUs
secured with TLS-PSK; and certificates through Twisted's C{ssl:} and
C{tls:} endpoints (RFC 5355 section 2.7.3).
"""
import os
import signal

from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ConnectError
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    clientFromString,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from rserpool import tap
from rserpool.codes import ErrorCause, PolicyType
from rserpool.pe import PoolElementService
from rserpool.pu import PoolUser
from rserpool.services import RegistrarService, make_config
from rserpool.transport.psk import (
    KeyFileError,
    PSKClientCreator,
    PSKEndpoints,
    PSKServerCreator,
    PSKServerEndpoint,
    load_keys,
    parse_keys,
    psk_identity,
)
from rserpool.wire import (
    Deregistration,
    DeregistrationResponse,
    HandleResolution,
    HandleResolutionResponse,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
    TCPTransport,
    encode,
)

from tests.helpers import eventually, tap_registrar, write_keys

from .test_registrar_integration import RawClient

TIMEOUT = 10.0

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 116))
KEYS = "# pool keys\npe-1 {}\n\n  pe-2   {}  \n".format(KEY_1.hex(), KEY_2.hex().upper())


def escape(path):
    return path.replace("\\", "\\\\").replace(":", "\\:")


class KeyFileTests(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(parse_keys(KEYS), {b"pe-1": KEY_1, b"pe-2": KEY_2})
        self.assertEqual(list(parse_keys(KEYS)), [b"pe-1", b"pe-2"])

    def test_errors(self):
        good = "aa" * 16
        cases = [
            ("", "no keys"),
            ("# only a comment\n", "no keys"),
            ("pe-1\n", "line 1: expected IDENTITY HEXKEY [ROLE]"),
            ("pe-1 {} pe extra\n".format(good), "line 1: expected IDENTITY HEXKEY [ROLE]"),
            ("pe-1 {} admin\n".format(good), "line 1: unknown role 'admin' (any, pe, pu)"),
            ("pe-1 {}\npe-2 xyz\n".format(good), "line 2: the key is not hexadecimal"),
            ("pe-1 {}\n".format("aa" * 15), "the key has 15 bytes (16 to 64 allowed)"),
            ("pe-1 {}\n".format("aa" * 65), "the key has 65 bytes"),
            ("{} {}\n".format("x" * 129, good), "identity longer than 128 bytes"),
            ("p\u00e9 {}\n".format(good), "printable ASCII"),
            ("pe-1 {0}\npe-1 {0}\n".format(good), "line 2: identity pe-1 given twice"),
        ]
        for text, message in cases:
            with self.assertRaises(KeyFileError) as caught:
                parse_keys(text, "f")
            self.assertIn(message, str(caught.exception), text)

    def test_roles(self):
        roles = {}
        text = "pe-1 {} PE\npu-1 {} pu\nboth {}\n".format(KEY_1.hex(), KEY_2.hex(), KEY_1.hex())
        keys = parse_keys(text, "f", roles)
        self.assertEqual(list(keys), [b"pe-1", b"pu-1", b"both"])
        self.assertEqual(roles, {b"pe-1": "pe", b"pu-1": "pu", b"both": "any"})

    def test_load(self):
        self.assertEqual(load_keys(write_keys(self, KEYS, 0o640)), {b"pe-1": KEY_1, b"pe-2": KEY_2})

    def test_openToEveryone(self):
        for mode in (0o644, 0o602):
            path = write_keys(self, KEYS, mode)
            with self.assertRaises(KeyFileError) as caught:
                load_keys(path)
            self.assertIn("chmod o-rwx", str(caught.exception))

    def test_unreadable(self):
        with self.assertRaises(KeyFileError) as caught:
            load_keys(self.mktemp())
        self.assertIn("cannot read key file", str(caught.exception))

    def test_notText(self):
        with self.assertRaises(KeyFileError):
            load_keys(write_keys(self, "pe-1 \u00ff\n"))


class EndpointStringTests(unittest.TestCase):
    def setUp(self):
        self.keys = escape(write_keys(self, KEYS))
        self.one = escape(write_keys(self, "solo {}\n".format(KEY_1.hex())))

    def test_server(self):
        endpoint = serverFromString(reactor, "psk:0:interface=127.0.0.1:keys=" + self.keys)
        self.assertIsInstance(endpoint, PSKServerEndpoint)

    def test_serverErrors(self):
        for description, message in [
            ("psk:keys=" + self.keys, "no port"),
            ("psk:0", "no key file"),
            ("psk:0:keys={}:colour=red".format(self.keys), "unknown option(s) colour"),
            ("psk:http:keys=" + self.keys, "port must be a number"),
            ("psk:0:keys={}:handshakeTimeout=-1".format(self.keys), "0 or more seconds"),
            ("psk:0:keys=/nonexistent/keys", "cannot read key file"),
        ]:
            with self.assertRaises(ValueError) as caught:
                serverFromString(reactor, description)
            self.assertIn(message, str(caught.exception), description)

    def test_clientErrors(self):
        for description, message in [
            ("psk:host=127.0.0.1:keys=" + self.keys, "needs host=...:port=..."),
            ("psk:127.0.0.1:3863", "no key file"),
            ("psk:127.0.0.1:3863:keys=" + self.keys, "holds 2 identities; say which"),
            ("psk:127.0.0.1:3863:identity=pe-9:keys=" + self.keys, "no identity 'pe-9'"),
            ("psk:127.0.0.1:0:keys=" + self.one, "port 0 out of range"),
            ("psk:127.0.0.1:3863:keys={}:tls=1".format(self.one), "unknown option(s) tls"),
        ]:
            with self.assertRaises(ValueError) as caught:
                clientFromString(reactor, description)
            self.assertIn(message, str(caught.exception), description)

    def test_clientSingleIdentity(self):
        # A file with one identity needs no identity=.
        clientFromString(reactor, "psk:127.0.0.1:3863:keys=" + self.one)


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.factory.made.append(self)
        self.received = b""

    def dataReceived(self, data):
        self.received += data
        self.factory.received.append(data)
        self.transport.write(data)


class EchoFactory(protocol.Factory):
    protocol = Echo

    def __init__(self):
        self.made = []
        self.received = []


class Client(protocol.Protocol):
    def __init__(self):
        self.received = b""
        self.lost = defer.Deferred()
        self.got = defer.Deferred()

    def dataReceived(self, data):
        self.received += data
        if not self.got.called:
            self.got.callback(self.received)

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(None)


class HandshakeTests(unittest.TestCase):
    """
    TLS-PSK over loopback TCP.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.keys = escape(write_keys(self, KEYS))
        self.factory = EchoFactory()
        endpoint = serverFromString(reactor, "psk:0:interface=127.0.0.1:keys=" + self.keys)
        self.listening = yield endpoint.listen(self.factory)
        self.addCleanup(self.listening.stopListening)
        self.port = self.listening.getHost().port

    @defer.inlineCallbacks
    def connect(self, keys, identity=None, maximum=None):
        if maximum is None:
            description = "psk:host=127.0.0.1:port={}:keys={}".format(self.port, keys)
            if identity is not None:
                description += ":identity=" + identity
            endpoint = clientFromString(reactor, description)
        else:
            creator = PSKClientCreator(identity.encode("ascii"), keys)
            # Hold the client to an older TLS.
            creator._context.set_max_proto_version(maximum)
            endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", self.port))
        client = Client()
        yield connectProtocol(endpoint, client)
        self.addCleanup(self.close, client)
        return client

    def close(self, client):
        if client.transport.connected:
            client.transport.loseConnection()
        return client.lost

    @defer.inlineCallbacks
    def test_echo(self):
        client = yield self.connect(self.keys, "pe-2")
        client.transport.write(b"ping")
        received = yield client.got.addTimeout(TIMEOUT, reactor)
        self.assertEqual(received, b"ping")
        connection = client.transport.getHandle()
        self.assertEqual(connection.get_protocol_version_name(), "TLSv1.3")
        self.assertEqual(self.factory.received, [b"ping"])

    @defer.inlineCallbacks
    def test_tls12(self):
        client = yield self.connect(KEY_1, "pe-1", maximum=SSL.TLS1_2_VERSION)
        client.transport.write(b"ping")
        received = yield client.got.addTimeout(TIMEOUT, reactor)
        self.assertEqual(received, b"ping")
        connection = client.transport.getHandle()
        self.assertEqual(connection.get_protocol_version_name(), "TLSv1.2")
        # An ephemeral key exchange: ECDHE-PSK or DHE-PSK, never plain PSK.
        self.assertRegex(connection.get_cipher_name(), r"^(ECDHE|DHE)-PSK-")

    @defer.inlineCallbacks
    def refused(self, keys, identity):
        client = yield self.connect(keys, identity)
        client.transport.write(b"let me in")
        yield client.lost.addTimeout(TIMEOUT, reactor)
        self.assertIsInstance(client.reason.value, SSL.Error)
        self.assertEqual(client.received, b"")
        # The server's application never saw a byte.
        self.assertEqual(self.factory.received, [])

    def test_wrongKey(self):
        other = escape(write_keys(self, "pe-1 {}\n".format(KEY_2.hex())))
        return self.refused(other, "pe-1")

    def test_unknownIdentity(self):
        stranger = escape(write_keys(self, "stranger {}\n".format(KEY_1.hex())))
        return self.refused(stranger, None)

    @defer.inlineCallbacks
    def test_identities_apart(self):
        # One OpenSSL context serves every connection: each still knows the
        # identity its own peer proved, with handshakes in flight at once.
        clients = yield defer.gatherResults(
            [self.connect(self.keys, name) for name in ("pe-1", "pe-2", "pe-1", "pe-2")])
        for client in clients:
            client.transport.write(b"ping")
        yield defer.gatherResults([c.got.addTimeout(TIMEOUT, reactor) for c in clients])
        proved = [psk_identity(echo.transport) for echo in self.factory.made]
        self.assertEqual(sorted(proved), [b"pe-1", b"pe-1", b"pe-2", b"pe-2"])
        # No session to resume: every connection proves the key anew.
        creator = PSKServerCreator({b"pe-1": KEY_1})
        self.assertEqual(creator._context.get_session_cache_mode(), SSL.SESS_CACHE_OFF)

    @defer.inlineCallbacks
    def test_plainClient(self):
        client = Client()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        client.transport.write(b"\x01\x00\x00\x08" + b"\x00" * 4)
        yield client.lost.addTimeout(TIMEOUT, reactor)
        self.assertEqual(self.factory.received, [])


def tls_of(factory):
    # A registrar's listener: TLS, behind the handshakes' turns.
    return getattr(factory, "wrappedFactory", None) if not isinstance(
        factory, TLSMemoryBIOFactory) else factory


class HandshakeTurnsTests(unittest.TestCase):
    """
    A registrar's TLS handshakes take their turns with its messages (issue
    #14: a look at the sockets that found a thousand handshakes readable
    spent half a millisecond on each in one go).
    """

    class Handshaking(protocol.Protocol):
        _handshakeDone = False

        def __init__(self):
            self.received = []

        def dataReceived(self, data):
            self.received.append(data)

    def setUp(self):
        from rserpool.transport.guard import TurnScheduler
        from rserpool.transport.psk import _HandshakeTurnsFactory

        self.clock = task.Clock()
        self.turns = TurnScheduler(self.clock)
        inner = protocol.Factory.forProtocol(self.Handshaking)
        self.factory = _HandshakeTurnsFactory(inner, self.turns, 64)

    def connect(self, host):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 5000))
        gate = self.factory.buildProtocol(IPv4Address("TCP", host, 5000))
        gate.makeConnection(transport)
        return gate, transport

    def test_at_once_while_the_slice_lasts(self):
        gate, _ = self.connect("192.0.2.1")
        gate.dataReceived(b"hello")
        self.assertEqual(gate.wrappedProtocol.received, [b"hello"])

    def test_in_a_turn_when_the_slice_is_spent(self):
        self.turns.spent(self.turns.slice)
        gate, transport = self.connect("192.0.2.1")
        gate.dataReceived(b"hel")
        gate.dataReceived(b"lo")
        self.assertEqual(gate.wrappedProtocol.received, [])
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(0)
        self.assertEqual(gate.wrappedProtocol.received, [b"hello"])
        self.assertEqual(transport.producerState, "producing")

    def test_after_the_handshake_straight_through(self):
        self.turns.spent(self.turns.slice)
        gate, _ = self.connect("192.0.2.1")
        gate.wrappedProtocol._handshakeDone = True
        gate.dataReceived(b"data")
        self.assertEqual(gate.wrappedProtocol.received, [b"data"])

    def test_gone_while_waiting(self):
        self.turns.spent(self.turns.slice)
        gate, _ = self.connect("192.0.2.1")
        gate.dataReceived(b"hello")
        gate.connectionLost(None)
        self.assertEqual(len(self.turns), 0)


class HandshakeDeadlineTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_deadline(self):
        """
        A connection that does not finish its handshake in time is closed;
        one that does keeps going.
        """
        clock = task.Clock()
        factory = EchoFactory()
        endpoint = PSKServerEndpoint(
            clock, TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
            PSKServerCreator({b"pe-1": KEY_1}), handshake_timeout=5)
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        silent = Client()
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), silent)
        yield eventually(lambda: factory.made, "the silent connection to be accepted", step=0.01)
        self.assertEqual(len(factory.made), 1)
        keys = escape(write_keys(self, "pe-1 {}\n".format(KEY_1.hex())))
        talker = Client()
        yield connectProtocol(clientFromString(reactor, "psk:127.0.0.1:{}:keys={}".format(
            port.getHost().port, keys)), talker)
        self.addCleanup(lambda: talker.transport.loseConnection() or talker.lost)
        talker.transport.write(b"ping")
        yield talker.got.addTimeout(TIMEOUT, reactor)
        self.assertEqual(len(factory.made), 2)
        # Only the silent connection's deadline is left.
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(4.9)
        self.assertTrue(silent.transport.connected)
        clock.advance(0.1)
        yield silent.lost.addTimeout(TIMEOUT, reactor)
        self.assertEqual(clock.getDelayedCalls(), [])
        # The authenticated connection keeps going.
        talker.transport.write(b"pong")
        yield eventually(lambda: talker.received == b"pingpong",
                         lambda: "the echo b'pingpong', not %r" % (talker.received,), step=0.01)


class SecuredRegistrarTests(unittest.TestCase):
    """
    A registrar whose ASAP endpoint is TLS-PSK: PEs and PUs with a key
    register and resolve; a node without one gets nothing.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.keys = escape(write_keys(self, KEYS))
        self.service = yield tap_registrar(self, [
            "--asap", "psk:0:interface=127.0.0.1:keys=" + self.keys,
            "--enrp", "none", "--id", "0x5eed", "--quiet",
        ])
        self.port = self.service.asap_ports[0].getHost().port

    @defer.inlineCallbacks
    def connect(self, description):
        client = RawClient("asap", auto_ack=True)
        yield connectProtocol(clientFromString(reactor, description), client)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def test_registerAndResolve(self):
        secure = "psk:127.0.0.1:{}:identity={}:keys=" + self.keys
        pe = yield self.connect(secure.format(self.port, "pe-1"))
        element = PoolElement(
            0x1234, 0, 60000, TCPTransport(7, ("127.0.0.1",)),
            Policy.make(PolicyType.ROUND_ROBIN))
        response = yield pe.request(Registration(b"secure", element), RegistrationResponse)
        self.assertFalse(response.reject)
        self.assertEqual(response.identifier, 0x1234)
        pu = yield self.connect(secure.format(self.port, "pe-2"))
        answer = yield pu.request(HandleResolution(b"secure"), HandleResolutionResponse)
        self.assertEqual([e.identifier for e in answer.pool_elements], [0x1234])

    @defer.inlineCallbacks
    def test_rfc5355_2_3_pool_user_key_registers_nothing(self):
        """
        An identity the key file makes a pool user (role pu) resolves but
        cannot register a PE (RFC 5355 section 2.3: registration by an
        unauthorized PE); the file's roles are re-read with its keys.
        """
        path = write_keys(self, "pe-1 {} pe\npu-1 {} pu\n".format(KEY_1.hex(), KEY_2.hex()))
        service = yield tap_registrar(self, [
            "--asap", "psk:0:interface=127.0.0.1:keys=" + escape(path),
            "--enrp", "none", "--quiet"])
        port = service.asap_ports[0].getHost().port
        secure = "psk:127.0.0.1:{}:identity={}:keys=" + escape(path)
        element = PoolElement(0x77, 0, 60000, TCPTransport(7, ("127.0.0.1",)),
                              Policy.make(PolicyType.ROUND_ROBIN))
        pu = yield self.connect(secure.format(port, "pu-1"))
        answer = yield pu.request(Registration(b"secure", element), RegistrationResponse)
        self.assertTrue(answer.reject)
        (cause,) = answer.error.causes
        self.assertEqual(cause.code, ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS)
        self.assertEqual(len(service.registrar.handlespace), 0)
        pe = yield self.connect(secure.format(port, "pe-1"))
        answer = yield pe.request(Registration(b"secure", element), RegistrationResponse)
        self.assertFalse(answer.reject)
        answer = yield pu.request(HandleResolution(b"secure"), HandleResolutionResponse)
        self.assertEqual([e.identifier for e in answer.pool_elements], [0x77])

    @defer.inlineCallbacks
    def test_identityBound(self):
        """
        The registrar knows each connection's identity: another identity,
        from the same host, can neither deregister the PE nor take its
        identifier (RFC 5355 section 2.3.3).
        """
        secure = "psk:127.0.0.1:{}:identity={}:keys=" + self.keys
        pe = yield self.connect(secure.format(self.port, "pe-1"))
        element = PoolElement(
            0x1234, 0, 60000, TCPTransport(7, ("127.0.0.1",)),
            Policy.make(PolicyType.ROUND_ROBIN))
        yield pe.request(Registration(b"secure", element), RegistrationResponse)
        stored = self.service.registrar.handlespace.get(b"secure", 0x1234)
        self.assertEqual(stored.connection.identity, b"pe-1")
        intruder = yield self.connect(secure.format(self.port, "pe-2"))
        answer = yield intruder.request(Deregistration(b"secure", 0x1234), DeregistrationResponse)
        (cause,) = answer.error.causes
        self.assertEqual(cause.code, ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS)
        answer = yield intruder.request(Registration(b"secure", element), RegistrationResponse)
        self.assertTrue(answer.reject)
        (cause,) = answer.error.causes
        self.assertEqual(cause.code, ErrorCause.NON_UNIQUE_PE_IDENTIFIER)
        self.assertIs(self.service.registrar.handlespace.get(b"secure", 0x1234), stored)
        self.assertEqual(stored.connection.identity, b"pe-1")

    @defer.inlineCallbacks
    def test_plainRefused(self):
        client = yield self.connect("tcp:127.0.0.1:{}".format(self.port))
        client.send(HandleResolution(b"secure"))
        yield client.lost.addTimeout(TIMEOUT, reactor)
        self.assertEqual(client.messages, [])
        self.assertEqual(len(self.service.registrar.handlespace), 0)


class SecuredOptionsTests(unittest.TestCase):
    """
    C{twistd enrp --psk-keys}: every endpoint secured, and RFC 5355 section
    2.15.3's all-or-nothing rule.
    """

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options.settings

    def test_secured(self):
        path = write_keys(self, KEYS)
        peers = write_keys(self, "reg-1 {}\nreg-2 {}\n".format(KEY_1.hex(), KEY_2.hex()))
        settings = self.parse("--psk-keys", path, "--psk-peer-keys", peers,
                              "--psk-identity", "reg-2", "--peer", "127.0.0.1:9902")
        psk = settings["psk"]
        self.assertEqual(psk.server(settings["asap"][0]),
                         "psk:3863:interface=127.0.0.1:keys=" + escape(path))
        self.assertEqual(psk.client("tcp:host=127.0.0.1:port=9902"),
                         "psk:host=127.0.0.1:port=9902:keys={}:identity=reg-2".format(escape(peers)))

    def test_errors(self):
        keys = write_keys(self, KEYS)
        one = write_keys(self, "solo {}\n".format(KEY_1.hex()))
        cases = [
            (["--psk-keys", one, "--psk-peer-keys", keys], "say with --psk-identity which one"),
            (["--psk-keys", keys, "--psk-identity", "pe-9"], "no identity 'pe-9'"),
            (["--psk-identity", "pe-1"], "--psk-identity and --psk-peer-keys need --psk-keys"),
            (["--psk-peer-keys", one], "--psk-identity and --psk-peer-keys need --psk-keys"),
            (["--psk-keys", keys, "--psk-peer-keys", one, "--psk-identity", "pe-1"],
             "no identity 'pe-1' in " + one),
            (["--psk-keys", write_keys(self, KEYS, 0o604), "--enrp", "none"], "chmod o-rwx"),
            (["--psk-keys", one, "--enrp", "none", "--asap", "sctp:3863"],
             "TLS-PSK runs over TCP only"),
            (["--psk-keys", one, "--peer", "sctp:host=127.0.0.1:port=9901"],
             "--peer: TLS-PSK runs over TCP only"),
            (["--asap", "psk:3863:keys=" + escape(one)], "secured and unsecured endpoints mixed"),
            (["--asap", "psk:3863:keys=" + escape(one), "--enrp", "none",
              "--peer", "127.0.0.1:9901"], "secured and unsecured endpoints mixed"),
        ]
        for argv, message in cases:
            with self.assertRaises(tap.usage.UsageError) as caught:
                self.parse(*argv)
            self.assertIn(message, str(caught.exception), argv)

    def test_peerKeys(self):
        # --psk-peer-keys: ENRP's listener and peers use their own file.
        asap = write_keys(self, KEYS)
        enrp = write_keys(self, "reg-1 {}\nreg-2 {}\n".format(KEY_1.hex(), KEY_2.hex()))
        settings = self.parse("--psk-keys", asap, "--psk-peer-keys", enrp,
                              "--psk-identity", "reg-1")
        psk = settings["psk"]
        self.assertEqual(psk.server("tcp:3863"), "psk:3863:keys=" + escape(asap))
        self.assertEqual(psk.server("tcp:9901", peer=True), "psk:9901:keys=" + escape(enrp))
        self.assertEqual(psk.client("tcp:192.0.2.2:9901"),
                         "psk:192.0.2.2:9901:keys={}:identity=reg-1".format(escape(enrp)))

    def test_quoted(self):
        """
        A key file path and an identity with C{:} and C{=} in them survive
        the endpoint strings the registrar writes.
        """
        directory = os.path.abspath(self.mktemp()) + "/a=b:c"
        os.makedirs(directory)
        path = os.path.join(directory, "keys")
        with open(path, "w") as f:
            f.write("reg=1:x {}\nreg-2 {}\n".format(KEY_1.hex(), KEY_2.hex()))
        os.chmod(path, 0o600)
        psk = tap.Options()
        psk.parseOptions(["--psk-keys", write_keys(self, KEYS), "--psk-peer-keys", path,
                          "--psk-identity", "reg=1:x"])
        # The client parser finds the identity in the file, or raises.
        clientFromString(reactor, psk.settings["psk"].client("tcp:127.0.0.1:9901"))
        endpoint = serverFromString(reactor, psk.settings["psk"].server("tcp:0", peer=True))
        self.assertEqual(endpoint.creator.path, path)
        self.assertEqual(endpoint.creator.identities, {b"reg=1:x", b"reg-2"})

    def test_oneIdentity(self):
        # The file's only identity needs no --psk-identity, and a registrar
        # without ENRP presents none.
        one = write_keys(self, "solo {}\n".format(KEY_1.hex()))
        self.assertIsNone(self.parse("--psk-keys", write_keys(self, KEYS),
                                     "--psk-peer-keys", one)["psk"].identity)
        self.assertIsNone(self.parse("--psk-keys", write_keys(self, KEYS),
                                     "--enrp", "none")["psk"].identity)

    def test_allSecured(self):
        # Every endpoint given as psk: is allowed without --psk-keys.
        one = escape(write_keys(self, "solo {}\n".format(KEY_1.hex())))
        pool = escape(write_keys(self, KEYS))
        settings = self.parse("--asap", "psk:3863:keys=" + pool, "--enrp", "psk:9901:keys=" + one)
        self.assertIsNone(settings["psk"])


#: Fast ENRP timers (seconds).
FAST = ["--peer-heartbeat-cycle", "0.2", "--peer-max-time-last-heard", "1",
        "--peer-max-time-no-response", "1", "--mentor-discovery-timeout", "0.3"]


class SecuredPeeringTests(unittest.TestCase):
    """
    Two registrars with C{--psk-keys}: they peer over TLS-PSK and a PE
    registered at one is known to the other.
    """

    @defer.inlineCallbacks
    def start(self, identity, *extra):
        service = yield tap_registrar(self, [
            "--asap", "tcp:0:interface=127.0.0.1", "--enrp", "tcp:0:interface=127.0.0.1",
            "--psk-keys", self.keys, "--psk-peer-keys", self.peer_keys,
            "--psk-identity", identity, "--quiet",
        ] + FAST + list(extra))
        return service

    @defer.inlineCallbacks
    def test_peering(self):
        self.keys = write_keys(self, KEYS)
        self.peer_keys = write_keys(self, "reg-a {}\nreg-b {}\n".format(
            bytes(range(50, 82)).hex(), bytes(range(90, 122)).hex()))
        b = yield self.start("reg-b", "--id", "0xb")
        self.assertTrue(b.asap_ports and b.enrp_ports)
        enrp_b = b.enrp_ports[0].getHost().port
        a = yield self.start("reg-a", "--id", "0xa", "--peer", "127.0.0.1:%d" % enrp_b)
        for port in a.ports + b.ports:
            self.assertIsInstance(tls_of(port.factory), TLSMemoryBIOFactory)
        client = RawClient("asap", auto_ack=True)
        yield connectProtocol(clientFromString(reactor, "psk:127.0.0.1:{}:identity=pe-1:keys={}".format(
            a.asap_ports[0].getHost().port, escape(self.keys))), client)
        self.addCleanup(client.close)
        element = PoolElement(
            0x77, 0, 60000, TCPTransport(7, ("127.0.0.1",)), Policy.make(PolicyType.ROUND_ROBIN))
        response = yield client.request(Registration(b"peered", element), RegistrationResponse)
        self.assertFalse(response.reject)
        yield eventually(lambda: b.registrar.handlespace.get(b"peered", 0x77) is not None,
                         "the PE at B (ENRP over TLS-PSK)", step=0.05)
        pe = b.registrar.handlespace.get(b"peered", 0x77)
        self.assertEqual(pe.home_registrar, 0xA)
        # A PE's key does not open the ENRP side.
        intruder = Client()
        yield connectProtocol(clientFromString(reactor, "psk:127.0.0.1:{}:identity=pe-1:keys={}".format(
            enrp_b, escape(self.keys))), intruder)
        intruder.transport.write(b"\x00" * 8)
        yield intruder.lost.addTimeout(TIMEOUT, reactor)
        self.assertIsInstance(intruder.reason.value, SSL.Error)


class SecuredPoolTests(unittest.TestCase):
    """
    The whole path secured: a registrar with L{PSKEndpoints}, a pool
    element that registers over TLS-PSK and serves its application on a
    C{psk:} endpoint, and a pool user that resolves over TLS-PSK and then
    talks to the pool element over TLS-PSK.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_pool(self):
        path = write_keys(self, KEYS)
        keys = escape(path)
        registrar = RegistrarService(
            make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"],
            psk=PSKEndpoints(path))
        registrar.startService()
        self.addCleanup(registrar.stopService)
        ports = yield registrar.ready
        self.assertIsInstance(tls_of(ports[0].factory), TLSMemoryBIOFactory)
        asap = "psk:127.0.0.1:{}:identity={}:keys={}"
        pe = PoolElementService(
            b"SecureEcho", factory=EchoFactory(),
            endpoint="psk:0:interface=127.0.0.1:keys=" + keys,
            registrars=[asap.format(ports[0].getHost().port, "pe-1", keys)])
        pe.startService()
        self.addCleanup(lambda: pe.running and pe.stopService())
        yield pe.registered.addTimeout(TIMEOUT, reactor)
        pu = PoolUser(reactor, registrars=[asap.format(ports[0].getHost().port, "pe-2", keys)])
        self.addCleanup(pu.close)
        infos = yield pu.resolve(b"SecureEcho")
        self.assertEqual([i.identifier for i in infos], [pe.identifier])
        client = Client()
        yield connectProtocol(clientFromString(reactor, "psk:{}:{}:identity=pe-2:keys={}".format(
            infos[0].address, infos[0].port, keys)), client)
        self.addCleanup(lambda: client.transport.loseConnection() or client.lost)
        client.transport.write(b"secret")
        received = yield client.got.addTimeout(TIMEOUT, reactor)
        self.assertEqual(received, b"secret")


class SharedKeysRefusedTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_refused(self):
        """
        RFC 5355 section 2.5: a registrar whose ENRP side would share the
        PEs' and pool users' key file does not start (it used to warn);
        one with a file for its peers does, and so does one without ENRP.
        (C{twistd enrp}'s own refusal: C{tests.test_enrp_trust}.)
        """
        path = write_keys(self, KEYS)
        peers = write_keys(self, "reg-1 {}\n".format(KEY_1.hex()))
        for psk in (PSKEndpoints(path, "pe-1"), PSKEndpoints(path, "pe-1", peer_keys=path)):
            with self.assertRaises(ValueError) as caught:
                RegistrarService(
                    make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"],
                    enrp_endpoint="tcp:0:interface=127.0.0.1", psk=psk)
            self.assertIn("--psk-peer-keys", str(caught.exception))
        for psk, enrp in ((PSKEndpoints(path, "reg-1", peer_keys=peers), "tcp:0:interface=127.0.0.1"),
                          (PSKEndpoints(path), None)):
            service = RegistrarService(
                make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"],
                enrp_endpoint=enrp, psk=psk)
            service.startService()
            yield service.ready
            yield service.stopService()


def make_ca(directory, name):
    """
    A certificate authority and a server certificate for C{localhost}
    signed by it, as PEM files in C{directory}: C{ca/NAME.pem} (the trust
    root directory is C{ca}), C{server.pem}, C{server.key}.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name_of(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder()
          .subject_name(name_of(name)).issuer_name(name_of(name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True,
              crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(name_of("localhost")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    os.makedirs(os.path.join(directory, "ca"))
    with open(os.path.join(directory, "ca", name + ".pem"), "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "server.pem"), "wb") as f:
        f.write(server.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "server.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(os.path.join(directory, "server.key"), 0o600)


class CertificateTests(unittest.TestCase):
    """
    RFC 5355 section 2.7.3: a pool user authenticates its registrar by a
    certificate.  Twisted's own C{ssl:} (server) and C{tls:} (client)
    endpoints do it, with no code of ours in between.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_certificates(self):
        base = self.mktemp()
        make_ca(base, "pool-ca")
        other = self.mktemp()
        make_ca(other, "rogue-ca")
        options = tap.Options()
        options.parseOptions([
            "--asap", "ssl:0:interface=127.0.0.1:privateKey={0}/server.key:certKey={0}/server.pem"
            .format(escape(os.path.abspath(base))),
            "--enrp", "none", "--quiet"])
        registrar = tap.makeService(options)
        registrar.startService()
        self.addCleanup(registrar.stopService)
        ports = yield registrar.ready
        trusted = "tls:localhost:{}:trustRoots={}".format(
            ports[0].getHost().port, escape(os.path.abspath(os.path.join(base, "ca"))))
        pe = PoolElementService(b"Certified", factory=EchoFactory(), registrars=[trusted])
        pe.startService()
        self.addCleanup(lambda: pe.running and pe.stopService())
        yield pe.registered.addTimeout(TIMEOUT, reactor)
        pu = PoolUser(reactor, registrars=[trusted])
        self.addCleanup(pu.close)
        infos = yield pu.resolve(b"Certified")
        self.assertEqual([i.identifier for i in infos], [pe.identifier])
        # A registrar whose certificate the pool user's roots did not sign
        # is not believed.
        doubting = PoolUser(reactor, registrars=["tls:localhost:{}:trustRoots={}".format(
            ports[0].getHost().port, escape(os.path.abspath(os.path.join(other, "ca"))))])
        self.addCleanup(doubting.close)
        with self.assertRaises(Exception) as caught:
            yield doubting.resolve(b"Certified")
        self.assertIn("no registrar answered", str(caught.exception))
        # Because the handshake fails verifying the certificate.
        client = Client()
        yield connectProtocol(clientFromString(reactor, "tls:localhost:{}:trustRoots={}".format(
            ports[0].getHost().port, escape(os.path.abspath(os.path.join(other, "ca"))))), client)
        yield client.lost.addTimeout(TIMEOUT, reactor)
        self.assertIsInstance(client.reason.value, SSL.Error)
        self.assertIn("certificate verify failed", str(client.reason.value))


class AnnounceWarningTests(unittest.TestCase):
    def test_warned(self):
        """
        A secured registrar that sends Server Announces says that they do
        not tell how to reach it.
        """
        from rserpool.services import AnnounceSettings

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = RegistrarService(
            make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"],
            psk=PSKEndpoints(write_keys(self, KEYS)),
            announce=AnnounceSettings(group=("127.0.0.1", 9), interval=60, ttl=1,
                                      interface="127.0.0.1"))
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(any("psk: registrar endpoints" in e.get("log_format", "")
                            for e in events))


class SecuredWithoutPSKKeysTests(unittest.TestCase):
    """
    A registrar whose endpoints are all given secured (no --psk-keys) does
    not dial peers it learns of: their addresses come without TLS
    settings (RFC 5355 section 2.15.3).
    """

    def test_learnedPeerNotDialed(self):
        one = escape(write_keys(self, "solo {}\n".format(KEY_1.hex())))
        pool = escape(write_keys(self, KEYS))
        options = tap.Options()
        options.parseOptions(["--asap", "psk:0:interface=127.0.0.1:keys=" + pool,
                              "--enrp", "psk:0:interface=127.0.0.1:keys=" + one])
        self.assertTrue(options.settings["secured"])
        service = tap.makeService(options)
        self.assertTrue(service.secured)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service.peering.dial("tcp:host=127.0.0.1:port=9")
        self.assertEqual(service.peering.dialing, {})
        self.assertTrue(any("not dialed" in e.get("log_format", "") for e in events))

    def test_plainRegistrarDials(self):
        options = tap.Options()
        options.parseOptions([])
        self.assertFalse(options.settings["secured"])
        self.assertFalse(tap.makeService(options).secured)


class Upper(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data.upper())


class Collector(protocol.Protocol):
    def __init__(self):
        self.received = b""
        self.failovers = []

    def dataReceived(self, data):
        self.received += data

    def sessionFailover(self, pe):
        self.failovers.append(pe.identifier)


class SecuredSessionTests(unittest.TestCase):
    """
    The C{rserpool:} endpoint with C{keys=}: every connection to a PE,
    the first and the one after a failover, is TLS-PSK (RFC 5355 section
    2.9: the PU re-establishes trust with the new PE).
    """

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.path = write_keys(self, KEYS)
        self.keys = escape(self.path)
        self.registrar = RegistrarService(
            make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"], psk=PSKEndpoints(self.path))
        self.registrar.startService()
        self.addCleanup(self.registrar.stopService)
        ports = yield self.registrar.ready
        self.asap = "psk:127.0.0.1:{}:identity=pe-1:keys={}".format(
            ports[0].getHost().port, self.keys)
        self.pes = []
        for _ in range(2):
            pe = PoolElementService(
                b"SecureUpper", protocol.Factory.forProtocol(Upper),
                endpoint="psk:0:interface=127.0.0.1:keys=" + self.keys,
                registrars=[self.asap], enhanced=True)
            pe.startService()
            self.addCleanup(lambda pe=pe: pe.running and pe.stopService())
            self.pes.append(pe)
            yield pe.registered.addTimeout(TIMEOUT, reactor)

    def endpoint(self, **options):
        description = "rserpool:SecureUpper:registrar=" + self.asap.replace("\\", "\\\\").replace(
            ":", "\\:")
        for name, value in options.items():
            description += ":{}={}".format(name, value)
        endpoint = clientFromString(reactor, description)
        self.addCleanup(endpoint._pool_user.close)
        return endpoint

    def wait_for(self, client, data):
        return eventually(lambda: client.received == data,
                          lambda: "%r, not %r" % (data, client.received))

    @defer.inlineCallbacks
    def test_failover(self):
        endpoint = self.endpoint(keys=self.keys, identity="pe-2")
        client = yield endpoint.connect(protocol.Factory.forProtocol(Collector))
        session = client.transport._session
        self.assertIsInstance(session.link.transport.getHandle(), SSL.Connection)
        client.transport.write(b"one")
        yield self.wait_for(client, b"ONE")
        first = session.pe.identifier
        served = [pe for pe in self.pes if pe.identifier == first][0]
        for pe_session in list(served.session_factory.sessions):
            pe_session.link.transport.abortConnection()
        yield eventually(lambda: client.failovers, "the failover")
        self.assertEqual(len(client.failovers), 1)
        self.assertNotEqual(session.pe.identifier, first)
        self.assertIsInstance(session.link.transport.getHandle(), SSL.Connection)
        client.transport.write(b"two")
        yield self.wait_for(client, b"ONETWO")
        client.transport.loseConnection()
        yield eventually(
            lambda: session.link is None and not any(pe.session_factory.sessions for pe in self.pes),
            "the sessions at the PU and the PEs to close")

    @defer.inlineCallbacks
    def test_unsecurable(self):
        """
        A PE that the pool user cannot reach over TLS-PSK (here: SCTP)
        counts as unreachable.
        """
        from rserpool.pu import PoolClientEndpoint

        class Info:
            def endpoint_description(self):
                return "sctp:host=127.0.0.1:port=9:ppid=0"

        endpoint = PoolClientEndpoint(reactor, None, b"P",
                                      secure=PSKEndpoints(self.path, "pe-1").client)
        with self.assertRaises(ConnectError) as caught:
            yield endpoint.pe_endpoint(Info()).connect(protocol.Factory())
        self.assertIn("TLS-PSK runs over TCP only", str(caught.exception))

    def test_badOptions(self):
        with self.assertRaises(ValueError) as caught:
            self.endpoint(identity="pe-1")
        self.assertIn("identity= needs keys=", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            self.endpoint(keys=self.keys)
        self.assertIn("holds 2 identities", str(caught.exception))


class KeyFileTotalityTests(unittest.TestCase):
    @given(st.text(max_size=400))
    @settings(max_examples=300, deadline=None)
    def test_anyText(self, text):
        """
        Any text gives keys or a KeyFileError, never another exception; and
        what it gives holds only well-formed entries.
        """
        try:
            keys = parse_keys(text)
        except KeyFileError:
            return
        self.assertTrue(keys)
        for identity, key in keys.items():
            self.assertTrue(1 <= len(identity) <= 128 and identity.isascii())
            self.assertTrue(16 <= len(key) <= 64)


class KeyReloadTests(unittest.TestCase):
    """
    Reloading the key files: new keys take effect for new handshakes, and
    removing an identity revokes it (its connections are closed).
    """

    timeout = 30

    def test_creatorReload(self):
        path = write_keys(self, KEYS)
        creator = PSKServerCreator(load_keys(path), path=path)
        with open(path, "w") as f:
            f.write("pe-1 {}\npe-3 {}\n".format(KEY_1.hex(), KEY_2.hex()))
        self.assertEqual(creator.reload(), {b"pe-2"})
        self.assertEqual(creator.identities, {b"pe-1", b"pe-3"})
        with open(path, "w") as f:
            f.write("pe-1 short\n")
        self.assertRaises(KeyFileError, creator.reload)
        self.assertEqual(creator.identities, {b"pe-1", b"pe-3"})
        self.assertRaises(ValueError, PSKServerCreator({b"pe-1": KEY_1}).reload)

    @defer.inlineCallbacks
    def test_revocation(self):
        path = write_keys(self, KEYS)
        keys = escape(path)
        options = tap.Options()
        options.parseOptions(["--asap", "tcp:0:interface=127.0.0.1", "--enrp", "none",
                              "--psk-keys", path, "--quiet"])
        before = signal.getsignal(signal.SIGHUP)
        service = tap.makeService(options)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        yield service.ready
        port = service.asap_ports[0].getHost().port
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), before)
        secure = "psk:127.0.0.1:{}:identity={}:keys={}"
        clients = {}
        for number, identity in ((1, "pe-1"), (2, "pe-2")):
            client = RawClient("asap", auto_ack=True)
            yield connectProtocol(clientFromString(reactor, secure.format(port, identity, keys)),
                                  client)
            self.addCleanup(client.close)
            element = PoolElement(number, 0, 60000, TCPTransport(7, ("127.0.0.1",)),
                                  Policy.make(PolicyType.ROUND_ROBIN))
            yield client.request(Registration(b"revoked", element), RegistrationResponse)
            clients[identity] = client
        # pe-2 leaves the file, pe-3 joins; SIGHUP reloads.
        with open(path, "w") as f:
            f.write("pe-1 {}\npe-3 {}\n".format(KEY_1.hex(), bytes(range(200, 232)).hex()))
        os.kill(os.getpid(), signal.SIGHUP)
        yield clients["pe-2"].lost.addTimeout(TIMEOUT, reactor)
        handlespace = service.registrar.handlespace
        yield eventually(lambda: handlespace.get(b"revoked", 2) is None,
                         "the revoked identity's PE to go")
        self.assertIsNotNone(handlespace.get(b"revoked", 1))
        self.assertTrue(clients["pe-1"].transport.connected)
        # The new identity gets in; the revoked one does not.
        newcomer = Client()
        yield connectProtocol(clientFromString(reactor, secure.format(port, "pe-3", keys)), newcomer)
        newcomer.transport.write(encode(HandleResolution(b"revoked")))
        yield newcomer.got.addTimeout(TIMEOUT, reactor)
        newcomer.transport.loseConnection()
        yield newcomer.lost
        refused = Client()
        old_keys = escape(write_keys(self, "pe-2 {}\n".format(KEY_2.hex())))
        yield connectProtocol(clientFromString(reactor, secure.format(port, "pe-2", old_keys)),
                              refused)
        refused.transport.write(encode(HandleResolution(b"revoked")))
        yield refused.lost.addTimeout(TIMEOUT, reactor)
        self.assertIsInstance(refused.reason.value, SSL.Error)
        # Stopping restores the previous handler.
        yield service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
