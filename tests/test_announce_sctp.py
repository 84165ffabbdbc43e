"""
Server Announce and ENRP Presence over multicast as RSPLIB does it
(issue #7), on the host with fake reactors: announcements without a
transport (RSPLIB's) mean SCTP at the source address and port; PEs and PUs
take the announced mapping they reach registrars by; our registrar
announces its SCTP ASAP endpoint first and sends from its ASAP port; a
multicast Presence naming the wildcard address means its sender.
"""
import ipaddress

from twisted.internet import task
from twisted.trial import unittest

from rserpool.asap.announce import KnownRegistrar, RegistrarTable
from rserpool.asap.pool_element import PoolElementConfig, PoolElementMachine
from rserpool.asap.pool_user import PoolUserMachine
from rserpool.codes import PolicyType
from rserpool.driver import announced_endpoint, listen_for_registrars
from rserpool.services import AnnounceService, AnnounceSettings, ListenerService, presence_from
from rserpool.transport.multicast import AnnounceListener
from rserpool.wire import (
    Policy,
    Presence,
    SCTPTransport,
    ServerAnnounce,
    ServerInformation,
    TCPTransport,
    decode,
    encode,
)

ip = ipaddress.ip_address


class FakeMulticastReactor(task.Clock):
    """
    A clock that records C{listenMulticast} calls.
    """

    def __init__(self):
        task.Clock.__init__(self)
        self.multicast = []

    def listenMulticast(self, port, protocol, interface="", maxPacketSize=8192,
                        listenMultiple=False):
        self.multicast.append((port, protocol, interface, listenMultiple))
        return FakePort(port)


class FakePort:
    def __init__(self, port):
        self.port = port
        self.stopped = False

    def stopListening(self):
        self.stopped = True


class FakeMachine:
    def __init__(self, static=()):
        self.static = list(static)
        self.announced = {}

    def registrar_announced(self, server_id, endpoint, now):
        self.announced[server_id] = (endpoint, now)


class FakeDriver:
    def __init__(self, reactor, machine):
        self.reactor = reactor
        self.machine = machine
        self.flushes = 0

    def now(self):
        return self.reactor.seconds()

    def flush(self):
        self.flushes += 1


class RegistrarTableTests(unittest.TestCase):
    def test_sourcePortWhenAsked(self):
        """
        RSPLIB's receivers take an announcement without transport as SCTP
        at the datagram's source address and source port (its registrars
        send from their ASAP port): C{default_port=None} does the same.
        """
        table = RegistrarTable(default_port=None)
        entry = table.datagram_received(encode(ServerAnnounce(7)), ("10.0.0.1", 13163), 0.0)
        self.assertEqual(entry.endpoints, [("sctp", ip("10.0.0.1"), 13163)])

    def test_defaultPortKept(self):
        """
        The default table still assumes ASAP's port 3863.
        """
        entry = RegistrarTable().datagram_received(encode(ServerAnnounce(7)), ("10.0.0.1", 5), 0.0)
        self.assertEqual(entry.endpoints, [("sctp", ip("10.0.0.1"), 3863)])

    def test_listenerUsesSourcePort(self):
        """
        L{AnnounceListener}'s own table follows RSPLIB.
        """
        learned = []
        listener = AnnounceListener(task.Clock(), on_announce=learned.append)
        listener.datagramReceived(encode(ServerAnnounce(9)), ("10.0.0.2", 4000))
        self.assertEqual(learned[0].endpoints, [("sctp", ip("10.0.0.2"), 4000)])

    def test_silentRegistrarForgotten(self):
        """
        RFC 5352 section 3.6: a registrar not heard for the table's timeout
        is forgotten, and the PE or PU machine hears of it, even when no
        other announcement arrives (issue #15: registrar_forgotten was never
        called).
        """
        clock = task.Clock()
        forgotten = []
        listener = AnnounceListener(clock, on_forget=forgotten.append)
        listener.makeConnection(FakeDatagramTransport())
        listener.datagramReceived(encode(ServerAnnounce(9)), ("10.0.0.2", 4000))
        clock.advance(2.5)
        listener.datagramReceived(encode(ServerAnnounce(8)), ("10.0.0.3", 4000))
        clock.advance(2.5)
        self.assertEqual(forgotten, [])
        clock.advance(2.5)
        self.assertEqual(forgotten, [9])
        clock.advance(5.0)
        self.assertEqual(forgotten, [9, 8])
        listener.doStop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_forgottenLeavesTheHunt(self):
        config = PoolElementConfig(b"P", Policy.make(PolicyType.ROUND_ROBIN), identifier=1)
        pe = PoolElementMachine(config, TCPTransport(7, ("0.0.0.0",)), ["tcp:127.0.0.1:1"])
        pe.registrar_announced(9, "tcp:10.0.0.2:3863", 0)
        self.assertEqual(pe.candidates(), ["tcp:127.0.0.1:1", "tcp:10.0.0.2:3863"])
        pe.registrar_forgotten(9)
        self.assertEqual(pe.candidates(), ["tcp:127.0.0.1:1"])
        pu = PoolUserMachine(["tcp:127.0.0.1:1"])
        pu.registrar_announced(9, "tcp:10.0.0.2:3863", 0)
        pu.registrar_forgotten(9)
        self.assertEqual(pu.candidates(), ["tcp:127.0.0.1:1"])

    def test_transportsWin(self):
        """
        Announced transports are used as they are; the source port does
        not matter then.
        """
        table = RegistrarTable(default_port=None)
        data = encode(ServerAnnounce(7, (SCTPTransport(13163, ("10.0.0.9", "10.0.1.9")),)))
        entry = table.datagram_received(data, ("10.0.0.9", 40000), 0.0)
        self.assertEqual(entry.endpoints, [("sctp", ip("10.0.0.9"), 13163),
                                           ("sctp", ip("10.0.1.9"), 13163)])


class FakeDatagramTransport:
    def joinGroup(self, group, interface=""):
        pass

    def stopListening(self):
        pass


class AnnouncedEndpointTests(unittest.TestCase):
    def entry(self, *transports):
        return KnownRegistrar(7, tuple(transports), 0.0)

    def test_tcp(self):
        e = self.entry(SCTPTransport(1, ("10.0.0.1",)), TCPTransport(2, ("10.0.0.1",)))
        self.assertEqual(announced_endpoint(e, ("tcp",)), "tcp:host=10.0.0.1:port=2")

    def test_sctpMultiHomed(self):
        """
        An SCTP registrar: every address, ASAP's PPID 11.
        """
        e = self.entry(SCTPTransport(3863, ("10.0.0.1", "10.0.1.1")))
        self.assertEqual(announced_endpoint(e, ("sctp",)),
                         "sctp:host=10.0.0.1,10.0.1.1:port=3863:ppid=11")

    def test_sctpIPv6Quoted(self):
        e = self.entry(SCTPTransport(3863, ("fd00::1",)))
        self.assertEqual(announced_endpoint(e, ("sctp",)), "sctp:host=fd00\\:\\:1:port=3863:ppid=11")

    def test_noMatch(self):
        e = self.entry(SCTPTransport(3863, ("10.0.0.1",)))
        self.assertIsNone(announced_endpoint(e, ("tcp",)))

    def test_preferenceOrder(self):
        e = self.entry(SCTPTransport(1, ("10.0.0.1",)), TCPTransport(2, ("10.0.0.1",)))
        self.assertEqual(announced_endpoint(e, ("tcp", "sctp")), "tcp:host=10.0.0.1:port=2")
        self.assertEqual(announced_endpoint(e, ("sctp", "tcp")),
                         "sctp:host=10.0.0.1:port=1:ppid=11")

    def test_sctpEndpointParses(self):
        """
        The description is one our SCTP client endpoint parser takes.
        """
        from rserpool.transport.sctp import SCTPClientParser

        e = self.entry(SCTPTransport(3863, ("10.0.0.1", "10.0.1.1")))
        _, _, rest = announced_endpoint(e, ("sctp",)).partition(":")
        kwargs = dict(part.split("=", 1) for part in rest.split(":"))
        endpoint = SCTPClientParser().parseStreamClient(task.Clock(), **kwargs)
        self.assertIsNotNone(endpoint)


class ListenForRegistrarsTests(unittest.TestCase):
    """
    L{listen_for_registrars} with a fake reactor: the announced mapping
    that matches how the machine reaches registrars.
    """

    def listen(self, static, **kwargs):
        reactor = FakeMulticastReactor()
        machine = FakeMachine(static)
        driver = FakeDriver(reactor, machine)
        port = listen_for_registrars(reactor, ("239.0.0.50", 3863), driver, **kwargs)
        [(number, listener, interface, multiple)] = reactor.multicast
        self.assertEqual((port.port, number, multiple), (3863, 3863, True))
        self.assertEqual(listener.group, "239.0.0.50")
        reactor.advance(5)
        return machine, driver, listener

    def test_rsplibAnnounceSCTPClient(self):
        """
        An SCTP client learns an RSPLIB registrar (no transport in the
        announcement) as SCTP at the source address and port.
        """
        machine, driver, listener = self.listen(["sctp:host=10.0.0.5:port=3863"])
        listener.datagramReceived(encode(ServerAnnounce(0x0B)), ("10.255.1.1", 13163))
        self.assertEqual(machine.announced, {
            0x0B: ("sctp:host=10.255.1.1:port=13163:ppid=11", 5.0)})
        self.assertEqual(driver.flushes, 1)

    def test_tcpClientIgnoresSCTPOnly(self):
        """
        A TCP client still takes only TCP endpoints (as before).
        """
        machine, driver, listener = self.listen(["tcp:127.0.0.1:3863"])
        listener.datagramReceived(encode(ServerAnnounce(0x0B)), ("10.255.1.1", 13163))
        self.assertEqual(machine.announced, {})
        data = encode(ServerAnnounce(0x0C, (SCTPTransport(9, ("10.0.0.1",)),
                                            TCPTransport(3863, ("0.0.0.0",)))))
        listener.datagramReceived(data, ("10.255.1.2", 50000))
        self.assertEqual(machine.announced, {0x0C: ("tcp:host=10.255.1.2:port=3863", 5.0)})

    def test_noStaticRegistrars(self):
        """
        With no static registrar, TCP is preferred and SCTP accepted.
        """
        machine, _, listener = self.listen([])
        listener.datagramReceived(encode(ServerAnnounce(1)), ("10.0.0.1", 3863))
        data = encode(ServerAnnounce(2, (SCTPTransport(9, ("10.0.0.2",)),
                                         TCPTransport(10, ("10.0.0.2",)))))
        listener.datagramReceived(data, ("10.0.0.2", 1))
        self.assertEqual(machine.announced[1][0], "sctp:host=10.0.0.1:port=3863:ppid=11")
        self.assertEqual(machine.announced[2][0], "tcp:host=10.0.0.2:port=10")

    def test_pskClientSecuresAnnounced(self):
        """
        A client whose registrars are TLS-PSK reaches announced TCP
        registrars over TLS-PSK with the same key file and identity, and
        ignores SCTP ones (RFC 5355 section 2.12: an unauthenticated
        announcement must not lead to an unauthenticated registrar).
        """
        machine, _, listener = self.listen(
            [r"psk:host=10.0.0.5:port=3863:keys=/etc/a\:b.keys:identity=pe-1"])
        listener.datagramReceived(encode(ServerAnnounce(1)), ("10.0.0.1", 3863))
        data = encode(ServerAnnounce(2, (SCTPTransport(9, ("10.0.0.2",)),
                                         TCPTransport(10, ("10.0.0.2",)))))
        listener.datagramReceived(data, ("10.0.0.2", 1))
        self.assertEqual(machine.announced, {
            2: (r"psk:host=10.0.0.2:port=10:keys=/etc/a\:b.keys:identity=pe-1", 5.0)})

    def test_certificateClientIgnoresAnnounced(self):
        """
        With registrars secured by certificates only, announcements are
        not followed: they cannot say which name a certificate must bear.
        """
        machine, _, listener = self.listen(["tls:registrar.example:3863"])
        data = encode(ServerAnnounce(2, (TCPTransport(10, ("10.0.0.2",)),)))
        listener.datagramReceived(data, ("10.0.0.2", 1))
        self.assertEqual(machine.announced, {})

    def test_explicitProtocols(self):
        machine, _, listener = self.listen(["tcp:127.0.0.1:3863"], protocols=("sctp",))
        listener.datagramReceived(encode(ServerAnnounce(1)), ("10.0.0.1", 3863))
        self.assertEqual(machine.announced[1][0], "sctp:host=10.0.0.1:port=3863:ppid=11")

    def test_interfacePassed(self):
        reactor = FakeMulticastReactor()
        driver = FakeDriver(reactor, FakeMachine())
        listen_for_registrars(reactor, ("239.0.0.50", 3863), driver, interface="10.0.0.1")
        self.assertEqual(reactor.multicast[0][1].interface, "10.0.0.1")


class FakeHost:
    def __init__(self, kind, host, port, addresses=None):
        self.type = kind
        self.host = host
        self.port = port
        if addresses is not None:
            self.addresses = addresses


class FakeListeningPort:
    def __init__(self, host):
        self.host = host

    def getHost(self):
        return self.host


class RegistrarAnnounceTests(unittest.TestCase):
    """
    What our registrar announces, and where from.
    """

    def service(self, hosts, interface=None):
        reactor = FakeMulticastReactor()
        listeners = ListenerService(reactor)
        listeners.ports_of["ASAP"] = [FakeListeningPort(h) for h in hosts]
        svc = AnnounceService(listeners, reactor, 0x5EED, AnnounceSettings(
            group=("239.0.0.50", 3863), ttl=1, interface=interface))
        return svc, reactor

    def test_sctpFirst(self):
        """
        SCTP ASAP listeners come first with all their addresses (RSPLIB
        takes the first SCTP Transport), TCP ones after.
        """
        svc, _ = self.service([
            FakeHost("TCP", "10.0.0.1", 3863),
            FakeHost("SCTP", "10.0.0.1", 13163, ("10.0.0.1", "10.0.1.1")),
        ])
        self.assertEqual(svc.transports(), [
            SCTPTransport(13163, ("10.0.0.1", "10.0.1.1")),
            TCPTransport(3863, ("10.0.0.1",)),
        ])

    def test_sctpWildcardWithInterface(self):
        svc, _ = self.service([FakeHost("SCTP", "0.0.0.0", 3863, ("0.0.0.0",))],
                              interface="10.0.0.7")
        self.assertEqual(svc.transports(), [SCTPTransport(3863, ("10.0.0.7",))])

    def test_sctpWildcardLeftOut(self):
        """
        Without an interface a wildcard SCTP listener is not announced:
        receivers use the source address and port, as with RSPLIB.
        """
        svc, _ = self.service([FakeHost("SCTP", "0.0.0.0", 3863, ("0.0.0.0",))])
        self.assertEqual(svc.transports(), [])

    def test_sendsFromSCTPPort(self):
        """
        The announce socket is bound to the SCTP ASAP port number (reusable),
        as RSPLIB's is, and the sender uses TTL and interface.
        """
        svc, reactor = self.service([FakeHost("SCTP", "10.0.0.1", 13163, ("10.0.0.1",))],
                                    interface="10.0.0.1")
        svc.begin()
        [(port, sender, interface, multiple)] = reactor.multicast
        self.assertEqual((port, interface, multiple), (13163, "", True))
        self.assertEqual((sender.ttl, sender.interface, sender.group),
                         (1, "10.0.0.1", ("239.0.0.50", 3863)))
        sent = []

        class FakeUDP:
            def write(self, data, address):
                sent.append((decode(data, "asap"), address))

        sender.transport = FakeUDP()
        sender.announce()
        self.assertEqual(sent[0][0].transports, (SCTPTransport(13163, ("10.0.0.1",)),))
        sender.stopProtocol()

    def test_tcpOnlyFromAnyPort(self):
        svc, reactor = self.service([FakeHost("TCP", "127.0.0.1", 3863)])
        svc.begin()
        self.assertEqual(reactor.multicast[0][0], 0)
        reactor.multicast[0][1].stopProtocol()


class PresenceFromTests(unittest.TestCase):
    def presence(self, *addresses):
        return Presence(0x0B, 0, 0, ServerInformation(0x0B, SCTPTransport(9901, addresses)))

    def test_wildcardIsSender(self):
        """
        A multicast Presence whose Server Information names the wildcard
        address means its sender's address (RSPLIB uses the source address
        of every multicast Presence).
        """
        out = presence_from(self.presence("0.0.0.0"), ip("10.0.0.2"))
        self.assertEqual(out.server_information.transport,
                         SCTPTransport(9901, ("10.0.0.2",)))
        self.assertEqual(out.sender_id, 0x0B)

    def test_specificKept(self):
        message = self.presence("10.0.0.3", "10.0.1.3")
        self.assertIs(presence_from(message, ip("10.0.0.2")), message)

    def test_noSource(self):
        message = self.presence("0.0.0.0")
        self.assertIs(presence_from(message, None), message)
