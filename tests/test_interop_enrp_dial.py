"""
Interoperability scenario 4 (``doc/interop.rst``), one-sided: our
registrar lists RSPLIB 3.4's ``rspregistrar`` as a static ENRP peer over
SCTP, ``rspregistrar`` does not list us, and neither announces itself by
multicast.  RSPLIB takes a Presence only over an association whose remote
port is the ENRP port of the Server Information inside, so they peer only
because our ENRP listener is one-to-many (``mode=seqpacket``) and our
association to the peer leaves from it, from our ENRP port
(L{rserpool.transport.sctp.SCTPSeqPacketPort.connectAssociation}).

Guest only, like ``tests.test_interop_enrp`` (whose helpers this module
imports).  Run it with ``.ci/sctp-tests`` or::

    ../shared/tools/sctp-vm python3 -m twisted.trial tests.test_interop_enrp_dial
"""
from tests.test_interop_enrp import OUR_ID, OUR_TIMERS, RSPLIB_ID, ENRPInteropCase


class OneSidedPeeringTests(ENRPInteropCase):
    """
    Only our registrar knows of the other.
    """

    def ours_seqpacket(self, address, peers):
        """
        Our registrar on C{address} with a one-to-many ENRP listener and
        static SCTP peers C{peers} (no C{bindAddress}: the association
        leaves from the listener anyway).
        """
        extra = [
            # the later --enrp wins over our_registrar's one-to-one one
            "--enrp", "sctp:%d:interface=%s:mode=seqpacket:ppid=12" % (self.enrp_port, address),
            "--id", "0x%08x" % OUR_ID,
        ] + list(OUR_TIMERS)
        for peer in peers:
            extra += ["--peer", "sctp:host=%s:port=%d:ppid=12" % (peer, self.enrp_port)]
        p, asap, enrp = self.our_registrar(address, "registrar-ours", extra)
        self.assertEqual((asap, enrp), (self.asap, self.enrp_port))
        return p

    def test_peeringFromOurSideOnly(self):
        """
        C{rspregistrar} hears of us only through the association we set
        up, and accepts our Presence over it: a PE registered at ours
        shows up at RSPLIB (C{hsdump}) with our id as its home, and one
        registered at RSPLIB shows up at ours.
        """
        A, B, C, D = self.net.addresses
        reg = self.rspregistrar(B, [], RSPLIB_ID)
        ours = self.ours_seqpacket(A, [B])
        everyone = [ours, reg]
        pe_ours = self.rspserver("echo", (A, self.asap), "OurPool", C, "pe-at-ours")
        pe_rsplib = self.rspserver("echo", (B, self.asap), "RSPLIBPool", D, "pe-at-rsplib")
        everyone += [pe_ours, pe_rsplib]
        id_ours = self.pe_id(A, b"OurPool", everyone)
        id_rsplib = self.pe_id(B, b"RSPLIBPool", everyone)
        self.wait_home(B, id_ours, OUR_ID, 15, everyone)
        self.wait_home(A, id_rsplib, RSPLIB_ID, 15, everyone)
