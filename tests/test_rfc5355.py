"""
RFC 5355, threat by threat (issue #14: "each RFC 5355 threat has a test
named after its section that fails without its mitigation"): the sections
whose tests are not elsewhere.  The others are in C{tests.test_registrar}
(2.1, 2.2, 2.3, 2.13), C{tests.test_psk} and C{tests.test_pool_element}
(2.3), C{tests.test_enrp_trust} (2.5, 2.11, 2.17) and
C{tests.test_sealing} (2.16); C{doc/security.rst} ("RFC 5355, threat by
threat") lists them all.

The TLS tests run registrars, pool elements and pool users on loopback
TCP; the man in the middle of sections 2.8, 2.10 and 2.11 is a port
forwarder on loopback that records and alters what it forwards.  Section
2.14 drives the registrar's state machines under a L{task.Clock}.
"""
import os

from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString, connectProtocol
from twisted.logger import globalLogPublisher
from twisted.protocols import portforward
from twisted.python import usage
from twisted.trial import unittest

from rserpool import tap
from rserpool.asap.registrar import RegistrarConfig
from rserpool.driver import listen_for_registrars
from rserpool.codes import PolicyType
from rserpool.pe import PoolElementService
from rserpool.pu import PoolClientEndpoint, PoolUser
from rserpool.transport.psk import pe_securer, psk_identity
from rserpool.wire import (
    ADD_PE,
    Deregistration,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    HandleUpdate,
    ListResponse,
    Policy,
    PoolElement,
    Presence,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    ServerAnnounce,
    ServerInformation,
    TCPTransport,
    encode,
    encode_parameter,
)
from tests.test_announce_sctp import FakeMulticastReactor
from tests.test_enrp import cluster
from tests.helpers import eventually, refused_port, tap_registrar
from tests.test_psk import KEY_1, KEY_2, KEYS, Collector, Upper, escape, make_ca, write_keys
from tests.test_registrar import Harness, pe_param
from tests.test_registrar_integration import RawClient

TIMEOUT = 10.0

#: The client endpoint string of a TLS-PSK registrar on loopback.
SECURE = "psk:127.0.0.1:{port}:identity={identity}:keys={keys}"


def element(pe_id, port=7):
    """
    The Pool Element parameter of a registration from 127.0.0.1.
    """
    return PoolElement(pe_id, 0, 60000, TCPTransport(port, ("127.0.0.1",)),
                       Policy.make(PolicyType.ROUND_ROBIN))


class MiddleMan:
    """
    What a man in the middle sees and does on one forwarded connection:
    C{up} (client to server) and C{down} (server to client) record the
    bytes; C{alter_up} and C{alter_down}, when set, change the next chunk
    of their direction once (a function from bytes to bytes).
    """

    def __init__(self):
        self.up = bytearray()
        self.down = bytearray()
        self.alter_up = None
        self.alter_down = None
        self.altered = 0

    def forward(self, direction, data):
        getattr(self, direction).extend(data)
        alter = getattr(self, "alter_" + direction)
        if alter is not None:
            setattr(self, "alter_" + direction, None)
            data = alter(data)
            self.altered += 1
        return data


class _TappedClient(portforward.ProxyClient):
    # The forwarder's connection to the server: what comes down.
    def dataReceived(self, data):
        portforward.ProxyClient.dataReceived(
            self, self.peer.factory.middle.forward("down", data))


class _TappedClientFactory(portforward.ProxyClientFactory):
    protocol = _TappedClient
    noisy = False


class _TappedServer(portforward.ProxyServer):
    # The forwarder's connection from the client: what goes up.
    clientProtocolFactory = _TappedClientFactory

    def connectionMade(self):
        self.factory.connections.append(self)
        self.lost = defer.Deferred()
        portforward.ProxyServer.connectionMade(self)

    def dataReceived(self, data):
        portforward.ProxyServer.dataReceived(self, self.factory.middle.forward("up", data))

    def connectionLost(self, reason):
        portforward.ProxyServer.connectionLost(self, reason)
        self.lost.callback(None)


class _TappedFactory(portforward.ProxyFactory):
    protocol = _TappedServer
    noisy = False

    def __init__(self, host, port, middle):
        portforward.ProxyFactory.__init__(self, host, port)
        self.middle = middle
        self.connections = []


def man_in_the_middle(case, port):
    """
    A port forwarder on 127.0.0.1 to C{port} on 127.0.0.1, whose every
    connection goes through one L{MiddleMan}; closed at the end of the test.

    @return: C{(forwarder's port number, MiddleMan)}.
    """
    middle = MiddleMan()
    factory = _TappedFactory("127.0.0.1", port, middle)
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")

    def close():
        listening.stopListening()
        waits = []
        for server in factory.connections:
            if server.transport.connected:
                server.transport.loseConnection()
            waits.append(server.lost)
        return defer.DeferredList(waits).addTimeout(TIMEOUT, reactor)

    case.addCleanup(close)
    return listening.getHost().port, middle


def flip_middle_byte(data):
    """
    One bit of the chunk's middle byte flipped: inside a TLS record's
    ciphertext, or of a message in the clear.
    """
    data = bytearray(data)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


@defer.inlineCallbacks
def start_registrar(case, *argv):
    """
    A registrar made by C{twistd enrp}'s L{tap.makeService} (ASAP on
    loopback TCP unless C{argv} says otherwise), stopped at the end of the
    test.
    """
    argv = ["--quiet"] + list(argv)
    if "--asap" not in argv:
        argv += ["--asap", "tcp:0:interface=127.0.0.1"]
    service = yield tap_registrar(case, argv)
    return service


def asap_port(service):
    return service.asap_ports[0].getHost().port


@defer.inlineCallbacks
def raw_client(case, description, name="asap"):
    """
    A L{RawClient} connected by a client endpoint string; closed at the end
    of the test.
    """
    client = RawClient(name, auto_ack=True)
    yield connectProtocol(clientFromString(reactor, description), client)
    case.addCleanup(client.close)
    return client


def pes(service):
    """
    The (pool handle, PE identifier) pairs in a registrar's handlespace.
    """
    return sorted((pe.handle, pe.pe_id) for pe in service.registrar.handlespace.elements())


class SecuredASAPTests(unittest.TestCase):
    """
    A registrar with C{--psk-keys} (no ENRP): what reaches its ASAP side
    over TLS-PSK, and what an attacker without the key or on the path gets.
    """

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.path = write_keys(self, KEYS)
        self.keys = escape(self.path)
        self.service = yield start_registrar(self, "--enrp", "none", "--psk-keys", self.path)
        self.port = asap_port(self.service)

    def secure(self, identity="pe-1", keys=None, port=None):
        return SECURE.format(port=port or self.port, identity=identity, keys=keys or self.keys)

    @defer.inlineCallbacks
    def refused(self, description, message):
        """
        Send C{message} over a new connection: the registrar closes it
        without an answer.
        """
        client = yield raw_client(self, description)
        client.send(message)
        yield eventually(lambda: client.lost.called or client.messages, "an answer or the end")
        self.assertEqual(client.messages, [], description)
        self.assertTrue(client.lost.called, description)

    @defer.inlineCallbacks
    def test_rfc5355_2_4_unauthorized_pe_registers_nothing(self):
        """
        RFC 5355 section 2.4: a registrar creates or changes no state for
        a node it has not authorized, and holding a key of its file is the
        authorization.  A node without TLS, one presenting an identity the
        file does not hold (with a key that is in it: a leaked key under
        another name), and one with a wrong key for a known identity can
        neither register nor deregister; a PE with its key can.
        """
        pe = yield raw_client(self, self.secure("pe-1"))
        answer = yield pe.request(Registration(b"Pool", element(0x1)), RegistrationResponse)
        self.assertFalse(answer.reject)
        stranger = escape(write_keys(self, "stranger {}\n".format(KEY_1.hex())))
        wrong = escape(write_keys(self, "pe-2 {}\n".format(KEY_1.hex())))
        for description in ("tcp:127.0.0.1:%d" % self.port,
                            self.secure("stranger", stranger),
                            self.secure("pe-2", wrong)):
            yield self.refused(description, Registration(b"Pool", element(0x666)))
            yield self.refused(description, Deregistration(b"Pool", 0x1))
        self.assertEqual(pes(self.service), [(b"Pool", 0x1)])

    @defer.inlineCallbacks
    def test_rfc5355_2_8_replayed_registration_registers_nothing(self):
        """
        RFC 5355 section 2.8: a node on the path records every byte a PE
        sends in a TLS-PSK session that registers it; the PE leaves.
        Played again to the registrar on a new connection, the recording
        registers nothing: the handshake it holds answers the registrar's
        first session, not this one.
        """
        port, middle = man_in_the_middle(self, self.port)
        pe = yield raw_client(self, self.secure("pe-1", port=port))
        answer = yield pe.request(Registration(b"Replayed", element(0x88)), RegistrationResponse)
        self.assertFalse(answer.reject)
        self.assertEqual(pes(self.service), [(b"Replayed", 0x88)])
        yield pe.close()
        yield eventually(lambda: not pes(self.service), "the PE's removal")
        recording = bytes(middle.up)
        replay = RawClient("asap")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), replay)
        self.addCleanup(replay.close)
        replay.transport.write(recording)
        yield eventually(lambda: replay.lost.called or pes(self.service), "the replay's end")
        self.assertEqual(pes(self.service), [])
        self.assertTrue(replay.lost.called)
        # The registrar answered with a handshake of its own, then closed:
        # no ASAP answer.
        self.assertEqual(bytes(replay.raw[:2]), b"\x16\x03")
        self.assertEqual([m for m in replay.messages if isinstance(m, RegistrationResponse)], [])

    @defer.inlineCallbacks
    def test_rfc5355_2_10_altered_registration_not_applied(self):
        """
        RFC 5355 section 2.10 (c): one bit of a PE's registration is
        changed on the path.  The registrar applies nothing and the
        connection ends; an unaltered registration then goes through.
        """
        port, middle = man_in_the_middle(self, self.port)
        pe = yield raw_client(self, self.secure("pe-1", port=port))
        # The handshake is done and a request answered: what follows is
        # one TLS record.
        yield pe.request(HandleResolution(b"Altered"), HandleResolutionResponse)
        middle.alter_up = flip_middle_byte
        pe.send(Registration(b"Altered", element(0x10)))
        yield eventually(lambda: pe.lost.called or pes(self.service), "the altered registration")
        self.assertEqual(middle.altered, 1)
        self.assertEqual(pes(self.service), [])
        self.assertTrue(pe.lost.called)
        self.assertEqual([m for m in pe.messages if isinstance(m, RegistrationResponse)], [])
        again = yield raw_client(self, self.secure("pe-1", port=port))
        answer = yield again.request(Registration(b"Altered", element(0x10)), RegistrationResponse)
        self.assertFalse(answer.reject)

    @defer.inlineCallbacks
    def test_rfc5355_2_10_altered_resolution_not_believed(self):
        """
        RFC 5355 section 2.10 (a): one bit of a Handle Resolution Response
        is changed on its way to the pool user.  The pool user's TLS
        refuses it: it gets no answer (and asks elsewhere) rather than a
        wrong address.
        """
        pe = yield raw_client(self, self.secure("pe-1"))
        yield pe.request(Registration(b"Resolved", element(0x20, port=4242)), RegistrationResponse)
        port, middle = man_in_the_middle(self, self.port)
        pu = yield raw_client(self, self.secure("pe-2", port=port))
        answer = yield pu.request(HandleResolution(b"Resolved"), HandleResolutionResponse)
        self.assertEqual([e.identifier for e in answer.pool_elements], [0x20])
        middle.alter_down = flip_middle_byte
        pu.send(HandleResolution(b"Resolved"))
        yield eventually(lambda: pu.lost.called or pu.messages, "the altered answer")
        self.assertEqual(middle.altered, 1)
        self.assertTrue(pu.lost.called)
        self.assertEqual(pu.messages, [])

    @defer.inlineCallbacks
    def test_rfc5355_2_11_eavesdropper_learns_nothing(self):
        """
        RFC 5355 section 2.11: over TLS-PSK, a node on the path that
        records a registration and a resolution, both ways, sees neither
        the pool handle nor the PE's transport (in any message that
        carries them).
        """
        port, middle = man_in_the_middle(self, self.port)
        secret = element(0x5EC2E7, port=0xBEEF)
        pe = yield raw_client(self, self.secure("pe-1", port=port))
        yield pe.request(Registration(b"Payroll-Secret", secret), RegistrationResponse)
        pu = yield raw_client(self, self.secure("pe-2", port=port))
        answer = yield pu.request(HandleResolution(b"Payroll-Secret"), HandleResolutionResponse)
        self.assertEqual([e.identifier for e in answer.pool_elements], [0x5EC2E7])
        seen = bytes(middle.up) + bytes(middle.down)
        self.assertTrue(seen)
        self.assertNotIn(b"Payroll-Secret", seen)
        self.assertNotIn(encode(HandleResolution(b"Payroll-Secret")), seen)
        self.assertNotIn(encode_parameter(secret.user_transport), seen)
        self.assertNotIn((0x5EC2E7).to_bytes(4, "big"), seen)  # the PE identifier


def log_events(case):
    """
    The log events emitted from now to the end of the test (a list).
    """
    events = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def problems(events):
    """
    The registrars a pool element said it could not register at.
    """
    return [e["registrar"] for e in events
            if e.get("log_format", "").startswith("cannot register at")]


def start_pe(case, handle, registrars, **options):
    """
    A L{PoolElementService} serving on loopback, quick to hunt; stopped at
    the end of the test.
    """
    options.setdefault("factory", protocol.Factory.forProtocol(protocol.Protocol))
    options.setdefault("endpoint", "tcp:0:interface=127.0.0.1")
    pe = PoolElementService(handle, registrars=registrars, hunt_retry_delay=0.1,
                            response_timeout=2.0, connect_timeout=2.0, **options)
    pe.startService()
    case.addCleanup(lambda: pe.running and pe.stopService())
    return pe


class RogueRegistrarTests(unittest.TestCase):
    """
    RFC 5355 sections 2.6 and 2.7: a registrar that does not hold the
    pool's key (a rogue on an address the PE or pool user was given, or
    reaches first) is not believed, and the next one is tried.  One rogue
    has no TLS at all, one answers TLS-PSK with the pool's identities but
    other keys; each holds a PE of the attacker's in the pool.
    """

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.path = write_keys(self, KEYS)
        self.keys = escape(self.path)
        self.legit = yield start_registrar(self, "--enrp", "none", "--psk-keys", self.path)
        self.plain_rogue = yield start_registrar(self, "--enrp", "none")
        rogue_path = write_keys(self, "pe-1 {}\npe-2 {}\n".format(KEY_2.hex(), KEY_1.hex()))
        self.keyed_rogue = yield start_registrar(self, "--enrp", "none", "--psk-keys", rogue_path)
        self.rogues = (self.plain_rogue, self.keyed_rogue)
        for rogue, description in (
                (self.plain_rogue, "tcp:127.0.0.1:%d" % asap_port(self.plain_rogue)),
                (self.keyed_rogue, SECURE.format(port=asap_port(self.keyed_rogue),
                                                 identity="pe-1", keys=escape(rogue_path)))):
            client = yield raw_client(self, description)
            answer = yield client.request(Registration(b"Pool", element(0xBAD, port=6666)),
                                          RegistrationResponse)
            self.assertFalse(answer.reject)

    def registrars(self, identity):
        """
        The rogues first, then the legitimate registrar, as C{psk:}
        endpoints with the pool's key file.
        """
        return [SECURE.format(port=asap_port(r), identity=identity, keys=self.keys)
                for r in self.rogues + (self.legit,)]

    @defer.inlineCallbacks
    def test_rfc5355_2_6_pe_registers_only_where_its_key_is_held(self):
        """
        RFC 5355 section 2.6: the PE authenticates the registrar.  It
        registers at neither rogue (the handshake fails), says so for
        each, and registers at the legitimate registrar.
        """
        events = log_events(self)
        registrars = self.registrars("pe-1")
        pe = start_pe(self, b"Pool", registrars)
        yield pe.registered.addTimeout(TIMEOUT, reactor)
        self.assertEqual(pes(self.legit), [(b"Pool", pe.identifier)])
        for rogue in self.rogues:
            self.assertEqual(pes(rogue), [(b"Pool", 0xBAD)])
        self.assertEqual(problems(events), registrars[:2])

    @defer.inlineCallbacks
    def test_rfc5355_2_7_pool_user_believes_only_a_registrar_with_its_key(self):
        """
        RFC 5355 section 2.7: the pool user authenticates the registrar,
        and when that fails it asks another.  Its resolution names the
        legitimate PE only, never the rogues'.
        """
        legit = yield raw_client(self, SECURE.format(
            port=asap_port(self.legit), identity="pe-1", keys=self.keys))
        yield legit.request(Registration(b"Pool", element(0x600D)), RegistrationResponse)
        pool_user = PoolUser(reactor, registrars=self.registrars("pe-2"), response_timeout=2.0,
                             connect_timeout=2.0)
        self.addCleanup(pool_user.close)
        infos = yield pool_user.resolve(b"Pool")
        self.assertEqual([i.identifier for i in infos], [0x600D])


class CertificateRegistrarTests(unittest.TestCase):
    """
    RFC 5355 section 2.7.3 with certificates, its mandatory mechanism for
    the pool user: registrars on Twisted's C{ssl:} endpoints, pool users
    on C{tls:} ones that trust the pool's certificate authority.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_rfc5355_2_7_pool_user_refuses_a_rogue_certificate(self):
        """
        A rogue registrar whose certificate (for the right name) another
        authority signed is refused, and the pool user resolves at the
        next registrar, whose certificate the pool's authority signed.
        """
        pool_ca, rogue_ca = os.path.abspath(self.mktemp()), os.path.abspath(self.mktemp())
        make_ca(pool_ca, "pool-ca")
        make_ca(rogue_ca, "rogue-ca")
        served = {}
        for name, base in (("rogue", rogue_ca), ("legit", pool_ca)):
            service = yield start_registrar(
                self, "--enrp", "none", "--asap",
                "ssl:0:interface=127.0.0.1:privateKey={0}/server.key:certKey={0}/server.pem"
                .format(escape(base)))
            # Its own PEs trust it.
            port = asap_port(service)
            served[name] = "tls:localhost:{}:trustRoots={}".format(
                port, escape(os.path.join(base, "ca")))
            client = yield raw_client(self, served[name])
            answer = yield client.request(
                Registration(b"Pool", element(0xBAD if name == "rogue" else 0x600D)),
                RegistrationResponse)
            self.assertFalse(answer.reject)
        trusting = [d.rsplit(":trustRoots=", 1)[0] + ":trustRoots=" + escape(
            os.path.join(pool_ca, "ca")) for d in (served["rogue"], served["legit"])]
        pool_user = PoolUser(reactor, registrars=trusting, response_timeout=2.0,
                             connect_timeout=2.0)
        self.addCleanup(pool_user.close)
        infos = yield pool_user.resolve(b"Pool")
        self.assertEqual([i.identifier for i in infos], [0x600D])


class Recorder(protocol.Protocol):
    """
    An application protocol that keeps what it receives in its factory's
    C{received} list.
    """

    def dataReceived(self, data):
        self.factory.received.append(data)


class SecuredFailoverTests(unittest.TestCase):
    """
    RFC 5355 section 2.9: a pool user fails over from one PE to another.
    The application hears of it, and the new connection is secured and
    authenticated as the first was.
    """

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.path = write_keys(self, KEYS)
        self.keys = escape(self.path)
        registrar = yield start_registrar(self, "--enrp", "none", "--psk-keys", self.path)
        self.port = asap_port(registrar)

    @defer.inlineCallbacks
    def pool_element(self, endpoint, factory):
        pe = start_pe(self, b"Pool", [SECURE.format(port=self.port, identity="pe-1",
                                                    keys=self.keys)],
                      factory=factory, endpoint=endpoint, enhanced=True)
        yield pe.registered.addTimeout(TIMEOUT, reactor)
        return pe

    @defer.inlineCallbacks
    def session(self, told):
        """
        An Enhanced Mode session of identity C{pe-2} to the pool over
        TLS-PSK; failovers appended to C{told}.
        """
        pool_user = PoolUser(reactor, registrars=[SECURE.format(
            port=self.port, identity="pe-2", keys=self.keys)])
        self.addCleanup(pool_user.close)
        endpoint = PoolClientEndpoint(
            reactor, pool_user, b"Pool", enhanced=True, secure=pe_securer(self.path, "pe-2"),
            session_options={"failover_callback": lambda p, pe: told.append(pe.identifier)})
        client = yield endpoint.connect(protocol.Factory.forProtocol(Collector))
        self.addCleanup(self.close, client)
        return client

    @defer.inlineCallbacks
    def close(self, client):
        client.transport.loseConnection()
        yield eventually(lambda: client.transport._session.link is None, "the session's end")

    def served_by(self, pes, client):
        session = client.transport._session
        (pe,) = [pe for pe in pes if pe.identifier == session.pe.identifier]
        return pe

    @defer.inlineCallbacks
    def test_rfc5355_2_9_failover_told_and_secured_again(self):
        """
        The application's failover callback is called once, with the new
        PE; the connection to it is TLS-PSK, where the PE sees the pool
        user's identity, and the data goes on.
        """
        secured = "psk:0:interface=127.0.0.1:keys=" + self.keys
        pes = []
        for _ in range(2):
            pe = yield self.pool_element(secured, protocol.Factory.forProtocol(Upper))
            pes.append(pe)
        told = []
        client = yield self.session(told)
        session = client.transport._session
        client.transport.write(b"one")
        yield eventually(lambda: client.received == b"ONE", "the first answer")
        first = self.served_by(pes, client)
        (link,) = first.session_factory.sessions
        self.assertEqual(psk_identity(link.link.transport), b"pe-2")
        link.link.transport.abortConnection()
        yield eventually(lambda: told, "the failover")
        second = self.served_by(pes, client)
        self.assertIsNot(second, first)
        self.assertEqual(told, [second.identifier])
        self.assertIsInstance(session.link.transport.getHandle(), SSL.Connection)
        (link,) = second.session_factory.sessions
        self.assertEqual(psk_identity(link.link.transport), b"pe-2")
        client.transport.write(b"two")
        yield eventually(lambda: client.received == b"ONETWO", "the answer after the failover")
        self.assertEqual(told, [second.identifier])

    @defer.inlineCallbacks
    def test_rfc5355_2_9_no_cleartext_to_an_unsecured_pe(self):
        """
        A PE of the pool that serves without TLS (its registration is
        genuine: a misconfigured or subverted PE) is never sent the
        session's data, neither at first nor on failover: the handshake
        with it fails, and the session goes on with the secured PEs.
        """
        secured = "psk:0:interface=127.0.0.1:keys=" + self.keys
        plain = protocol.Factory.forProtocol(Recorder)
        plain.received = []
        yield self.pool_element("tcp:0:interface=127.0.0.1", plain)
        pes = []
        for _ in range(2):
            pe = yield self.pool_element(secured, protocol.Factory.forProtocol(Upper))
            pes.append(pe)
        told = []
        client = yield self.session(told)
        # The session may try the unsecured PE first: the TCP connection
        # is made, the handshake fails, and the session fails over.
        yield eventually(lambda: any(pe.session_factory.sessions for pe in pes) or plain.received,
                    "a session at a secured PE")
        client.transport.write(b"one")
        yield eventually(lambda: client.received == b"ONE" or plain.received, "the first answer")
        self.assertEqual(plain.received, [])
        first = self.served_by(pes, client)
        for link in list(first.session_factory.sessions):
            link.link.transport.abortConnection()
        (second,) = [pe for pe in pes if pe is not first]
        yield eventually(lambda: second.session_factory.sessions or plain.received, "the failover")
        client.transport.write(b"two")
        yield eventually(lambda: client.received == b"ONETWO" or plain.received,
                    "the answer after the failover")
        self.assertEqual(plain.received, [])
        self.assertIs(self.served_by(pes, client), second)
        # A PE whose handshake failed never carried the session: no
        # failover was told for it, only the one to the second PE.
        self.assertEqual(told, [second.identifier])


class SpoofedDiscoveryTests(unittest.TestCase):
    """
    RFC 5355 section 2.12: Server Announces are not authenticated, so a
    pool element whose registrars are secured reaches announced ones only
    over TLS-PSK, with its own key: a spoofed announcement leads to a
    failed handshake, not to a registration at the attacker's registrar.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_rfc5355_2_12_spoofed_announce_leads_nowhere(self):
        """
        A PE whose only static registrar is down hears a spoofed Server
        Announce for a registrar without TLS, and one for an SCTP
        registrar: it registers at neither (it tries the first over
        TLS-PSK and fails; it ignores the second).  A genuine registrar
        announced next gets the registration, over TLS-PSK.
        """
        path = write_keys(self, KEYS)
        keys = escape(path)
        legit = yield start_registrar(self, "--enrp", "none", "--psk-keys", path)
        rogue = yield start_registrar(self, "--enrp", "none")
        down = SECURE.format(port=refused_port(self), identity="pe-1", keys=keys)
        events = log_events(self)
        pe = start_pe(self, b"Pool", [down])
        yield eventually(lambda: down in problems(events), "the static registrar's failure")
        # The announcements arrive as datagrams from the group.
        multicast = FakeMulticastReactor()
        listen_for_registrars(multicast, ("239.0.0.50", 3863), pe.driver)
        [(_, listener, _, _)] = multicast.multicast

        def announce(server_id, transport):
            listener.datagramReceived(encode(ServerAnnounce(server_id, (transport,))),
                                      ("127.0.0.1", 3863))

        announce(0x5C7, SCTPTransport(asap_port(rogue), ("127.0.0.1",)))
        announce(0xBAD, TCPTransport(asap_port(rogue), ("127.0.0.1",)))
        spoofed = "psk:host=127.0.0.1:port=%d:keys=%s:identity=pe-1" % (asap_port(rogue), keys)
        yield eventually(lambda: pe.registered.called or spoofed in problems(events),
                    "the spoofed registrar's attempt")
        self.assertEqual(pes(rogue), [])
        self.assertFalse(pe.registered.called)
        self.assertEqual(pe.machine.announced, {0xBAD: spoofed})
        announce(0x600D, TCPTransport(asap_port(legit), ("127.0.0.1",)))
        yield pe.registered.addTimeout(TIMEOUT, reactor)
        self.assertEqual(pes(legit), [(b"Pool", pe.identifier)])
        self.assertEqual(pes(rogue), [])


class _Listener(protocol.Protocol):
    def connectionMade(self):
        self.factory.connections.append(self)
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.factory.received.append(data)

    def connectionLost(self, reason):
        self.lost.callback(None)


def plain_listener(case):
    """
    A TCP listener on 127.0.0.1 that records what it is sent (C{received},
    C{connections} of its factory); closed at the end of the test.

    @return: C{(port number, factory)}.
    """
    factory = protocol.Factory.forProtocol(_Listener)
    factory.noisy = False
    factory.connections = []
    factory.received = []
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")

    def close():
        listening.stopListening()
        for connection in factory.connections:
            connection.transport.abortConnection()
        return defer.DeferredList([c.lost for c in factory.connections])

    case.addCleanup(close)
    return listening.getHost().port, factory


class SecuredHandlespaceTests(unittest.TestCase):
    """
    RFC 5355 section 2.15: a registrar that supports security takes no
    registration and no peer update that did not come over TLS, so its
    handlespace is all secured; a registrar cannot be configured to mix.
    """

    timeout = 30

    def setUp(self):
        self.path = write_keys(self, KEYS)
        self.keys = escape(self.path)
        self.peer_path = write_keys(self, "reg-1 {}\nreg-2 {}\n".format(
            bytes(range(50, 82)).hex(), bytes(range(90, 122)).hex()))
        self.peer_keys = escape(self.peer_path)

    def secured(self):
        return start_registrar(
            self, "--id", "0x15", "--enrp", "tcp:0:interface=127.0.0.1",
            "--psk-keys", self.path, "--psk-peer-keys", self.peer_path,
            "--psk-identity", "reg-1")

    @defer.inlineCallbacks
    def peer(self, service, port=9):
        """
        Registrar 0xB2 over TLS-PSK with a registrars' key: it introduces
        itself (its ENRP port: C{port}).
        """
        enrp = service.enrp_ports[0].getHost().port
        client = yield raw_client(self, SECURE.format(
            port=enrp, identity="reg-2", keys=self.peer_keys), "enrp")
        client.send(Presence(0xB2, 0x15, 0xFFFF, ServerInformation(
            0xB2, TCPTransport(port, ("127.0.0.1",)))))
        return client

    @defer.inlineCallbacks
    def test_rfc5355_2_15_secured_registrar_takes_nothing_unsecured(self):
        """
        Over plain TCP, neither a registration at the ASAP port nor a
        Presence and Handle Update at the ENRP port gets in: the
        connections are closed unanswered.  Over TLS-PSK, a PE's
        registration and a registrar's Handle Update do.
        """
        service = yield self.secured()
        enrp = service.enrp_ports[0].getHost().port
        handle_update = HandleUpdate(0xB2, 0x15, ADD_PE, b"Pool", PoolElement(
            0x777, 0xB2, 60000, TCPTransport(7, ("127.0.0.1",)),
            Policy.make(PolicyType.ROUND_ROBIN)))
        plain = yield raw_client(self, "tcp:127.0.0.1:%d" % asap_port(service))
        plain.send(Registration(b"Pool", element(0x666)))
        plain_peer = yield raw_client(self, "tcp:127.0.0.1:%d" % enrp, "enrp")
        plain_peer.send(Presence(0xB2, 0x15, 0xFFFF, ServerInformation(
            0xB2, TCPTransport(9, ("127.0.0.1",)))))
        plain_peer.send(handle_update)
        for client in (plain, plain_peer):
            yield eventually(lambda: client.lost.called or client.messages, "an answer or the end")
            self.assertEqual(client.messages, [])
            self.assertTrue(client.lost.called)
        self.assertEqual(pes(service), [])
        self.assertEqual(service.enrp.peers, {})
        pe = yield raw_client(self, SECURE.format(
            port=asap_port(service), identity="pe-1", keys=self.keys))
        answer = yield pe.request(Registration(b"Pool", element(0x1)), RegistrationResponse)
        self.assertFalse(answer.reject)
        peer = yield self.peer(service)
        peer.send(handle_update)
        yield eventually(lambda: len(pes(service)) == 2, "the secured Handle Update")
        self.assertEqual(pes(service), [(b"Pool", 0x1), (b"Pool", 0x777)])

    @defer.inlineCallbacks
    def test_rfc5355_2_15_learned_peers_reached_only_secured(self):
        """
        A peer names another registrar in a List Response; its address
        says nothing of TLS.  With C{--psk-keys} the registrar dials it
        over TLS-PSK (the listener there receives a TLS handshake, no
        ENRP message); with all its endpoints given secured and no
        C{--psk-keys}, it does not dial it at all.
        """
        port, listener = plain_listener(self)
        named = ListResponse(0xB2, 0x15, (ServerInformation(
            0xC3, TCPTransport(port, ("127.0.0.1",))),))
        service = yield self.secured()
        peer = yield self.peer(service)
        peer.send(named)
        yield eventually(lambda: listener.received, "the named registrar's connection")
        self.assertEqual(listener.received[0][:2], b"\x16\x03")  # a TLS handshake record
        self.assertEqual(len(listener.connections), 1)
        events = log_events(self)
        given = yield start_registrar(
            self, "--id", "0x15", "--asap", "psk:0:interface=127.0.0.1:keys=" + self.keys,
            "--enrp", "psk:0:interface=127.0.0.1:keys=" + self.peer_keys)
        peer = yield self.peer(given)
        peer.send(named)
        yield eventually(lambda: any("not dialed" in e.get("log_format", "") for e in events),
                    "the refusal to dial")
        self.assertEqual(len(listener.connections), 1)

    def test_rfc5355_2_15_mixed_endpoints_refused(self):
        """
        C{twistd enrp} refuses to start with secured and unsecured
        endpoints mixed, among C{--asap}, C{--enrp} and C{--peer}.
        """
        for argv in (
                ["--asap", "psk:3863:keys=" + self.keys, "--enrp", "tcp:9901"],
                ["--asap", "tcp:3863", "--enrp", "psk:9901:keys=" + self.peer_keys],
                ["--asap", "psk:3863:keys=" + self.keys,
                 "--enrp", "psk:9901:keys=" + self.peer_keys, "--peer", "127.0.0.1:9902"],
                ["--asap", "psk:3863:keys=" + self.keys, "--asap", "tcp:3864",
                 "--enrp", "none"]):
            with self.assertRaises(usage.UsageError) as caught:
                tap.Options().parseOptions(argv)
            self.assertIn("secured and unsecured endpoints mixed", str(caught.exception), argv)


class KeepAliveFrequencyTests(unittest.TestCase):
    """
    RFC 5355 section 2.14: a registrar limits the Endpoint Keep Alives it
    sends a PE.  What bounds them (L{rserpool.asap.registrar}): a PE has
    one timer; a periodic keep-alive goes L{RegistrarConfig.keep_alive_interval
    <rserpool.asap.registrar.RegistrarConfig>} after the PE's last sign of
    life (an ack, a registration), never while one is unanswered; Endpoint
    Unreachable reports from distinct sources send one at once only when
    none is unanswered; a takeover sends one, with the H flag, to each PE
    it moves.  Sans I/O, under a L{task.Clock}.

    Not bounded by the interval: the keep-alives that reports trigger.  An
    answer clears a PE's reports, so a PE that answers at once gets one
    more each time MAX-BAD-PE-REPORT distinct sources report it again
    (about 12 a second with three sources at the default rates;
    C{doc/security.rst}, "RFC 5355, threat by threat").
    """

    def keep_alives(self, received, now, log):
        out = [m for m in received if isinstance(m, EndpointKeepAlive)]
        log.extend(now for _ in out)
        return out

    def test_rfc5355_2_14_no_keep_alive_while_one_is_unanswered(self):
        """
        Ten sources report a PE unreachable as fast as their rate allows,
        for 20 s.  A PE that answers each keep-alive a second late gets
        the next one only after its answer; one that never answers gets
        one, and is removed at its timeout.
        """
        h = Harness()
        slow, deaf = h.client(port=40000), h.client(port=40001)
        slow.register(b"P", pe_param(1))
        deaf.register(b"P", pe_param(2))
        reporters = [h.client("127.0.0.%d" % n, 50000) for n in range(2, 12)]
        sent, acked, deaf_sent = [], [], []
        due = []
        for step in range(1, 401):
            now = step * 0.05
            h.clock.advance(0.05)
            for reporter in reporters:
                reporter.send(EndpointUnreachable(b"P", 1))
                reporter.send(EndpointUnreachable(b"P", 2))
            for _ in self.keep_alives(slow.received(), now, sent):
                due.append(now + 1.0)
            self.keep_alives(deaf.received(), now, deaf_sent)
            while due and due[0] <= now + 1e-9:
                due.pop(0)
                slow.send(EndpointKeepAliveAck(b"P", 1))
                acked.append(now)
        # The reports made the registrar ask at once, and then after each
        # answer: never twice without one.
        self.assertGreater(len(sent), 2)
        for before, after in zip(sent, sent[1:]):
            self.assertTrue(any(before <= t <= after for t in acked),
                            "keep-alives at %.2f s and %.2f s, no answer between" % (before, after))
        self.assertIsNotNone(h.hs.get(b"P", 1))
        self.assertEqual(deaf_sent, [0.05])
        self.assertIsNone(h.hs.get(b"P", 2))
        self.assertIn((2, "keep-alive timeout"), h.removed)

    def test_rfc5355_2_14_reports_do_not_set_the_pace(self):
        """
        Thirty sources report a PE that answers at once, for 20 s, as fast
        as their rate allows: the reports make the registrar ask it at most
        once per keep-alive interval, besides the periodic keep-alive (two
        an interval at most, not one per round of reports).
        """
        h = Harness()
        pe = h.client(port=40000)
        pe.register(b"P", pe_param(1))
        reporters = [h.client("127.0.%d.%d" % (n // 200, 2 + n % 200), 50000)
                     for n in range(30)]
        sent = []
        for step in range(1, 401):
            now = step * 0.05
            h.clock.advance(0.05)
            for reporter in reporters:
                reporter.send(EndpointUnreachable(b"P", 1))
            for _ in self.keep_alives(pe.received(), now, sent):
                pe.send(EndpointKeepAliveAck(b"P", 1))
        interval = h.config.keep_alive_interval
        self.assertLessEqual(len(sent), 2 * 20 / interval + 1, sent)
        for start in range(20):
            window = [t for t in sent if start <= t < start + interval]
            self.assertLessEqual(len(window), 2, sent)
        self.assertIsNotNone(h.hs.get(b"P", 1))

    def test_rfc5355_2_14_periodic_keep_alives_one_per_interval(self):
        """
        A PE that answers at once gets one keep-alive per interval after
        its answer, not more; one that re-registers more often than that
        gets none (its registrations are signs of life).
        """
        h = Harness()
        interval = h.config.keep_alive_interval
        pe = h.client()
        pe.register(b"P", pe_param(1))
        sent = []
        for step in range(1, 601):
            now = step * 0.1
            h.clock.advance(0.1)
            for _ in self.keep_alives(pe.received(), now, sent):
                pe.send(EndpointKeepAliveAck(b"P", 1))
        self.assertIn(len(sent), (int(60 / interval) - 1, int(60 / interval)))
        for before, after in zip(sent, sent[1:]):
            self.assertGreaterEqual(after - before, interval - 1e-6)
        busy = []
        pe.register(b"P", pe_param(1))
        for step in range(1, 601):
            h.clock.advance(0.1)
            if step % 10 == 0:
                pe.register(b"P", pe_param(1))
            self.keep_alives(pe.received(), step, busy)
        self.assertEqual(busy, [])

    def test_rfc5355_2_14_one_keep_alive_with_h_per_takeover(self):
        """
        Four registrars, 40 PEs; two registrars die one after the other
        and are taken over.  A PE gets one keep-alive with the H flag from
        each registrar that adopts it, none from others, and its periodic
        keep-alives from any one registrar come an interval apart.
        """
        net = cluster(n=4, pes=40, hunt=False)
        received = {pe.pe_id: [] for pe in net.pes}

        def recording(pe):
            original = pe._message

            def message(conn, m):
                if isinstance(m, EndpointKeepAlive) and pe.alive:
                    received[pe.pe_id].append((net.clock.seconds(), m.server_id, m.home))
                original(conn, m)
            return message

        for pe in net.pes:
            pe._message = recording(pe)
        homes = {pe.pe_id: [pe.home] for pe in net.pes}
        victim = 4
        for _ in range(2):
            moved = [pe for pe in net.pes if pe.home == victim]
            net.registrars[victim].crash()
            net.run(30.0)
            for pe in net.pes:
                if pe.home != homes[pe.pe_id][-1]:
                    homes[pe.pe_id].append(pe.home)
            # Then the registrar that adopted them.
            (victim,) = {pe.home for pe in moved}
        # Some PEs were adopted twice, some once, some never.
        self.assertEqual({len(h) for h in homes.values()}, {1, 2, 3})
        interval = RegistrarConfig(server_id=1).keep_alive_interval
        for pe_id, kept in received.items():
            adopters = [server for _, server, home in kept if home]
            self.assertEqual(adopters, homes[pe_id][1:], pe_id)
            for server in set(s for _, s, _ in kept):
                times = [t for t, s, home in kept if s == server and not home]
                for before, after in zip(times, times[1:]):
                    self.assertGreaterEqual(after - before, interval - 1e-6, (pe_id, server))
