"""
Interoperability over UDP multicast with RSPLIB 3.4 (issue #7,
``doc/interop.rst``, section "Multicast"): ASAP Server Announce (RFC 5352
section 3.6) in both directions, and ENRP Presence on the multicast group
for peer discovery (RFC 5353 section 3.4.1), against Debian's RSPLIB
programs in the SCTP guest.

Guest only, with the harness of ``tests.test_interop_rsplib``: each test
builds its own dummy interface with site-local addresses, and routes
224.0.0.0/4 through it (as RSPLIB's capture script does) so that every
multicast datagram stays on that interface inside the guest; our senders
also set TTL 1 and the interface's address as the outgoing interface, and
the guest has no network but its loopback anyway (RSPLIB 3.4.4's
``rspregistrar`` rejects ``-announcettl``, so its TTL stays its default).
Deleting the interface at cleanup removes the route.  The groups are RSPLIB's defaults,
239.0.0.50:3863 and 239.0.0.51:9901.  Run it with ``.ci/sctp-tests`` or::

    ../shared/tools/sctp-vm python3 -m twisted.trial tests.test_interop_multicast
"""
import subprocess
import sys
import textwrap

from tests.test_interop_enrp import (
    OUR_ID,
    OUR_TIMERS,
    RSPLIB_ID,
    RSPLIB_TIMERS,
    ENRPInteropCase,
)
from tests.test_interop_rsplib import SKIP, sctp_reachable

ANNOUNCE_GROUP = "239.0.0.50:3863"
PRESENCE_GROUP = "239.0.0.51:9901"

#: Our PE, learning its registrar from Server Announce only (no static
#: registrar): prints "registered PEID HOME" once registered.
OUR_ANNOUNCE_PE = textwrap.dedent("""
    import sys
    from twisted.internet import reactor
    from twisted.python import log
    from rserpool.examples import server_factory
    from rserpool.pe import PoolElementService

    log.startLogging(sys.stdout)
    handle, address = sys.argv[1:3]
    pe = PoolElementService(
        handle, server_factory("echo", clock=reactor), endpoint="sctp:0:interface=" + address,
        registrars=(), reactor=reactor, announce=("239.0.0.50", 3863))

    def registered(_):
        print("registered %08x home %08x" % (pe.identifier, pe.home_registrar), flush=True)

    pe.registered.addCallback(registered)
    pe.startService()
    reactor.run()
""")


class MulticastCase(ENRPInteropCase):
    """
    A dummy interface that carries all multicast of the guest.
    """

    if SKIP is not None:
        skip = SKIP

    def setUp(self):
        ENRPInteropCase.setUp(self)
        # multicast leaves by this interface only (removed with it)
        subprocess.run(["ip", "route", "replace", "224.0.0.0/4", "dev", self.net.name],
                       check=True)


class ServerAnnounceTests(MulticastCase):
    """
    ASAP Server Announce on 239.0.0.50:3863 between our side and RSPLIB's.
    """

    def test_rspserverFindsOurRegistrar(self):
        """
        C{rspserver -echo} without C{-registrar}, listening for Server
        Announce, learns our registrar (SCTP ASAP endpoint on a port other
        than 3863) from its announcements and registers with it.
        """
        A, B = self.net.addresses[:2]
        reg, asap, _ = self.our_registrar(A, extra=[
            "--id", "0x%08x" % OUR_ID,
            "--announce", "--announce-group", ANNOUNCE_GROUP, "--announce-interval", "0.5",
            "--announce-interface", A, "--announce-ttl", "1",
        ])
        self.assertNotEqual(asap, 3863)
        pe = self.spawn("rspserver-echo", [
            "rspserver", "-echo", "-asapannounce=" + ANNOUNCE_GROUP, "-poolhandle=AnnouncePool",
            "-local=%s:0" % B, "-loglevel=3",
        ])
        answer = self.wait_registered((A, asap), b"AnnouncePool", processes=[reg, pe])
        [entry] = answer.pool_elements
        self.assertEqual([str(a) for a in entry.user_transport.addresses], [B])
        self.assertEqual(entry.home_registrar, OUR_ID)

    def test_ourPEFindsRspregistrar(self):
        """
        C{rspregistrar -asapannounce=239.0.0.50:3863} announces itself
        without a transport parameter; our PE, with no static registrar,
        takes the announcement's source address and port as an SCTP
        registrar and registers there.
        """
        A, B = self.net.addresses[:2]
        registrar = (A, self.asap)
        rsp = self.spawn("rspregistrar", [
            "rspregistrar", "-asap=%s:%d" % registrar, "-enrp=%s:%d" % (A, self.enrp_port),
            "-asapannounce=" + ANNOUNCE_GROUP, "-enrpannounce=off",
            "-serverannouncecycle=500", "-identifier=0x%08x" % RSPLIB_ID, "-loglevel=3",
        ])
        self.wait_for(lambda: sctp_reachable(*registrar), 20, "rspregistrar did not listen", [rsp])
        pe = self.spawn("rserpool-pe-announce", [
            sys.executable, "-c", OUR_ANNOUNCE_PE, "OurAnnouncePE", B,
        ], python=True)
        self.wait_for(lambda: "registered" in pe.output(), 20,
                      "our PE did not register through the announced registrar", [pe, rsp])
        answer = self.wait_registered(registrar, b"OurAnnouncePE", processes=[pe, rsp])
        [entry] = answer.pool_elements
        self.assertEqual([str(a) for a in entry.user_transport.addresses], [B])
        self.assertEqual(entry.home_registrar, RSPLIB_ID)
        # learned as an SCTP registrar at the announcement's source
        self.assertIn("sctp:host=%s:port=%d:ppid=11" % registrar, pe.output())


class PresenceMulticastTests(MulticastCase):
    """
    ENRP Presence on 239.0.0.51:9901: our registrar and C{rspregistrar}
    with no static peers find each other and share their PEs.
    """

    def test_discoveryAndSharedPEs(self):
        A, B, C, D = self.net.addresses[:4]
        ours = self.ours(A, [])
        rsp = self.spawn("rspregistrar", [
            "rspregistrar", "-asap=%s:%d" % (B, self.asap), "-enrp=%s:%d" % (B, self.enrp_port),
            "-asapannounce=off", "-enrpannounce=" + PRESENCE_GROUP,
            "-identifier=0x%08x" % RSPLIB_ID, "-minaddressscope=sitelocal", "-loglevel=4",
        ] + list(RSPLIB_TIMERS))
        self.wait_for(lambda: sctp_reachable(B, self.asap), 20, "rspregistrar did not listen", [rsp])
        pe_ours = self.rspserver("echo", (A, self.asap), "SharedPool", C, "rspserver-at-ours")
        pe_rsp = self.rspserver("echo", (B, self.asap), "SharedPool", D, "rspserver-at-rsplib")
        procs = [ours, rsp, pe_ours, pe_rsp]
        answer = self.wait_registered((A, self.asap), b"SharedPool", 2, timeout=25, processes=procs)
        homes = {str(pe.user_transport.addresses[0]): pe.home_registrar
                 for pe in answer.pool_elements}
        self.assertEqual(homes, {C: OUR_ID, D: RSPLIB_ID})
        self.wait_registered((B, self.asap), b"SharedPool", 2, timeout=10, processes=procs)
        ids = {pe.identifier: pe.home_registrar for pe in answer.pool_elements}
        for address in (A, B):
            self.wait_for(lambda: self.hsdump(address).homes == ids, 10,
                          "hsdump at %s did not list both PEs with their homes" % address, procs)

    def ours(self, address, peers, server_id=OUR_ID):
        extra = ["--id", "0x%08x" % server_id] + list(OUR_TIMERS) + [
            "--enrp-multicast", "--enrp-multicast-group", PRESENCE_GROUP,
            "--enrp-multicast-interface", address, "--enrp-multicast-ttl", "1",
            # RFC 5355 section 2.5: Presence on the group is followed only
            # from the accepted networks (the test's dummy interface).
            "--enrp-peer-networks", "%s/24" % address,
        ]
        p, asap, enrp = self.our_registrar(address, "registrar-ours", extra)
        self.assertEqual((asap, enrp), (self.asap, self.enrp_port))
        return p

