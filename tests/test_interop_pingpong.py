"""
Interoperability scenario 5, our halves (``doc/interop.rst``): Enhanced
Mode over SCTP with RSPLIB's PingPong, cookies and failover, in the SCTP
guest.

 - Our pool user (``rserpool pingpong``) against two ``rspserver
   -pingpong`` registered at our registrar: the serving PE is killed, the
   session moves to the other, which gets the first one's cookie in a
   Cookie Echo and continues its reply numbers.
 - RSPLIB's ``pingpongclient`` against two of our PEs (``rserpool pe
   pingpong``), the same way round.

The network, processes and polling are those of
L{tests.test_interop_rsplib}; the tests skip, saying why, outside a guest
whose kernel has SCTP, when not root, or without RSPLIB.  Run them with the
other SCTP tests (``.ci/sctp-tests``) or::

    ../shared/tools/sctp-vm python3 -m twisted.trial tests.test_interop_pingpong
"""
import re
import sys

from tests.test_interop_rsplib import InteropCase

#: pingpongclient's line, and ours (the same words): message, PE, reply
ACK = re.compile(r"Ack #(\d+) from PE \$([0-9a-f]{8}) \(reply #(\d+)\)")


def acks(process):
    """
    C{(message number, PE id, reply number)} of every Pong C{process}
    printed.
    """
    return [(int(n), pe, int(r)) for n, pe, r in ACK.findall(process.output())]


class PingPongInteropTests(InteropCase):
    def failover(self, client, pes, others):
        """
        Wait for three Pongs, kill the PE that sent them, wait for Pongs
        from another; check that the reply count went on.

        @param pes: PE id (8 hex digits) to the L{Process} serving it.
        """
        everyone = [client] + list(pes.values()) + list(others)
        first = self.wait_for(lambda: len(acks(client)) >= 3 and acks(client), 20,
                              "no Pongs", everyone)
        serving = first[-1][1]
        victim = pes.get(serving)
        self.assertIsNotNone(victim, "cannot tell which PE serves $%s" % serving)
        victim.kill()
        self.wait_for(lambda: sum(pe != serving for _, pe, _ in acks(client)) >= 2, 30,
                      "the session did not move to another PE", everyone)
        replies = [r for _, _, r in acks(client)]
        before = [r for _, pe, r in acks(client) if pe == serving]
        after = [r for _, pe, r in acks(client) if pe != serving]
        # The new PE took its count from the cookie the old one set after
        # its last Pong: it continues instead of starting again at 1.
        # (>=: a PE killed between a Pong and its cookie leaves the
        # previous cookie, and the number is answered again)
        self.assertGreater(after[0], 1, self.describe([client]))
        self.assertGreaterEqual(after[0], before[-1], self.describe([client]))
        self.assertEqual(replies, sorted(replies), self.describe([client]))
        return serving

    def test_ourPUWithRspserver(self):
        """
        Our PU keeps its PingPong session through the death of RSPLIB's PE:
        PPID 33 data, the cookie from C{rspserver -pingpong} (PPID 11)
        echoed to the next C{rspserver}.
        """
        reg, registrar, _, pes = self.pingpong_servers(("rspserver-1", "rspserver-2"))
        client = self.spawn("rserpool-pingpong", [
            sys.executable, "-m", "rserpool.cli", "pingpong", "PingPongPool", "--interval", "0.2",
            "--registrar", "sctp:host=%s:port=%d" % registrar,
        ], python=True)
        self.failover(client, pes, [reg])
        self.assertIn("(cookie echoed)", client.output())

    def test_pingpongclientWithOurPEs(self):
        """
        RSPLIB's C{pingpongclient} keeps its session through the death of
        our PE: our PE answers with PPID 33 and sets RSPLIB's cookie, and
        our other PE continues from it.
        """
        A, B, C = self.net.addresses[:3]
        reg, asap, _ = self.our_registrar(A)
        registrar = (A, asap)
        ours = []
        for name, address in (("pe-1", B), ("pe-2", C)):
            ours.append(self.spawn(name, [
                sys.executable, "-m", "rserpool.cli", "pe", "pingpong", "--handle", "PingPongPool",
                "--registrar", "sctp:host=%s:port=%d" % registrar,
                "--endpoint", "sctp:0:interface=%s" % address,
            ], python=True))
        self.wait_registered(registrar, b"PingPongPool", 2, processes=[reg] + ours)
        pes = {}
        for p in ours:
            line = self.wait_for(lambda p=p: re.search(r"registered ([0-9a-f]{8}) .*: sctp ",
                                                       p.output()),
                                 10, "our PE did not say it registered over SCTP", [p])
            pes[line.group(1)] = p
        client = self.spawn("pingpongclient", [
            "pingpongclient", "-registrar=%s:%d" % registrar, "-poolhandle=PingPongPool",
            "-interval=200",
        ])
        self.failover(client, pes, [reg])
