"""
ENRP peer discovery by Presence on a multicast group (RFC 5353 section
3.4.1), kept on the loopback interface: two registrars that know nothing of
each other find each other and share a PE.
"""

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from rserpool import tap
from tests.helpers import eventually, shared_udp_port
from tests.test_registrar_integration import RawClient
from rserpool.wire import (
    PoolElement,
    Policy,
    Registration,
    RegistrationResponse,
    TCPTransport,
)
from rserpool.codes import PolicyType

GROUP = "239.0.0.51"
DEADLINE = 10.0


class MulticastDiscoveryTests(unittest.TestCase):
    @defer.inlineCallbacks
    def start(self, server_id, udp_port):
        options = tap.Options()
        options.parseOptions(
            [
                "--asap", "tcp:0:interface=127.0.0.1",
                "--enrp", "tcp:0:interface=127.0.0.1",
                "--id", hex(server_id),
                "--quiet",
                "--enrp-multicast",
                "--enrp-multicast-group", "%s:%d" % (GROUP, udp_port),
                "--enrp-multicast-interface", "127.0.0.1",
                "--enrp-multicast-ttl", "1",
                # RFC 5355 section 2.5: whose Presence is followed.
                "--enrp-peer-networks", "127.0.0.0/8",
                "--peer-heartbeat-cycle", "0.1",
                "--mentor-discovery-timeout", "0.2",
            ]
        )
        service = tap.makeService(options)
        try:
            service.startService()
            yield service.ready
        except Exception as e:
            raise unittest.SkipTest("no multicast on loopback here: %s" % (e,))
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def test_peers_find_each_other_and_share_a_pe(self):
        port = shared_udp_port(self)
        a = yield self.start(0xA1, port)
        b = yield self.start(0xB2, port)
        yield eventually(
            lambda: 0xB2 in a.enrp.peers and 0xA1 in b.enrp.peers, "mutual discovery", DEADLINE
        )
        # a PE registered at A shows up in B's handlespace via Handle Update
        client = RawClient("asap", True)
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", a.asap_ports[0].getHost().port), client
        )
        self.addCleanup(client.transport.loseConnection)
        pe = PoolElement(
            0x1234, 0, 60000, TCPTransport(client.transport.getHost().port, ["127.0.0.1"]),
            Policy(PolicyType.ROUND_ROBIN),
        )
        yield client.request(Registration(b"MPool", pe), RegistrationResponse)
        yield eventually(
            lambda: b.registrar.handlespace.get(b"MPool", 0x1234) is not None, "the Handle Update",
            DEADLINE,
        )
        self.assertEqual(b.registrar.handlespace.get(b"MPool", 0x1234).home_registrar, 0xA1)
