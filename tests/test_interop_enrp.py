"""
Interoperability scenario 4 (``doc/interop.rst``): our registrar and
RSPLIB 3.4's ``rspregistrar`` peer over ENRP (RFC 5353) over SCTP, PPID
12.  PEs registered at either appear in both, and when either registrar is
killed the other takes its PEs over (RFC 5353 section 3.5) and tells them
with an Endpoint Keep Alive carrying the H flag (RFC 5352 section 3.7).

Guest only, like ``tests.test_interop_rsplib`` (whose harness this module
uses): each test builds a dummy interface with site-local addresses,
starts our registrar (``twistd -n enrp``) and RSPLIB's programs, polls
with deadlines and cleans up.  Both sides run short ENRP timers (1 s
heartbeat, 2 s max-time-last-heard, 1 s max-time-no-response and takeover
expiry; RSPLIB accepts nothing shorter) so that the module runs in well
under a minute.  Run it with ``.ci/sctp-tests`` or::

    ../shared/tools/sctp-vm python3 -m twisted.trial tests.test_interop_enrp
"""
import os
import re
import shutil
import subprocess

from tests.test_interop_rsplib import InteropCase, resolve, sctp_reachable, strip_colours

#: RSPLIB's ENRP and keep-alive timers, in ms (its minimum is 1000 for
#: the ENRP ones).
RSPLIB_TIMERS = (
    "-peerheartbeatcycle=1000",
    "-peermaxtimelastheard=2000",
    "-peermaxtimenoresponse=1000",
    "-takeoverexpiryinterval=1000",
    "-mentordiscoverytimeout=1000",
    "-endpointkeepalivetransmissioninterval=1000",
    "-endpointkeepalivetimeoutinterval=1000",
)
#: The same timers for ours, in seconds.
OUR_TIMERS = (
    "--peer-heartbeat-cycle", "1",
    "--peer-max-time-last-heard", "2",
    "--peer-max-time-no-response", "1",
    "--takeover-expiry", "1",
    "--mentor-discovery-timeout", "1",
    "--keep-alive-interval", "1",
    "--keep-alive-timeout", "1",
)

OUR_ID = 0x0A0A0A0A
RSPLIB_ID = 0x0B0B0B0B
RSPLIB_ID2 = 0x0C0C0C0C


class Dump:
    """
    What C{hsdump} printed: pools, and PEs with their home registrar.
    """

    def __init__(self, text):
        self.text = text
        #: {pe id: home registrar id}
        self.homes = {}
        #: {pe id: pool handle}
        self.pools = {}
        pool = pe = None
        for line in text.splitlines():
            m = re.search(r'Pool "([^"]*)"', line)
            if m:
                pool = m.group(1)
            # "- idx:#0001: $32374e52 flags=..." then "chsum=... home=$0a0a0a0a"
            m = re.search(r"- (?:idx|sel):#\d+: \$([0-9a-f]{8})", line)
            if m:
                pe = int(m.group(1), 16)
            m = re.search(r"home=\$([0-9a-f]{8})", line)
            if m and pe is not None and not line.lstrip().startswith("Handlespace"):
                self.homes[pe] = int(m.group(1), 16)
                self.pools[pe] = pool
                pe = None


class ENRPInteropCase(InteropCase):
    """
    Our registrar and C{rspregistrar}s on one dummy interface.
    """

    def setUp(self):
        InteropCase.setUp(self)
        self.asap = self.port_base + 63
        self.enrp_port = self.port_base + 1
        capture = os.environ.get("RSERPOOL_INTEROP_PCAP")
        if capture and shutil.which("dumpcap"):
            # For debugging: the test's SCTP traffic (all on loopback).
            path = "%s-%s.pcap" % (capture, self._testMethodName)
            dumpcap = self.spawn("dumpcap", ["dumpcap", "-q", "-i", "lo", "-f", "sctp", "-w", path])
            self.wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 10,
                          "dumpcap did not start writing %s" % path, [dumpcap])

    def ours(self, address, peers, server_id=OUR_ID):
        """
        Our registrar on C{address}, static ENRP peers C{peers}
        (addresses), our id and the short timers.
        """
        extra = ["--id", "0x%08x" % server_id] + list(OUR_TIMERS)
        for peer in peers:
            extra += ["--peer", "sctp:host=%s:port=%d:ppid=12:bindAddress=%s" % (
                peer, self.enrp_port, address)]
        p, asap, enrp = self.our_registrar(address, "registrar-ours", extra)
        self.assertEqual((asap, enrp), (self.asap, self.enrp_port))
        return p

    def rspregistrar(self, address, peers, server_id, name="rspregistrar"):
        argv = [
            "rspregistrar", "-asap=%s:%d" % (address, self.asap),
            "-enrp=%s:%d" % (address, self.enrp_port),
            "-asapannounce=off", "-enrpannounce=off",
            "-identifier=0x%08x" % server_id, "-minaddressscope=sitelocal",
            "-loglevel=4",
        ] + ["-peer=%s:%d" % (peer, self.enrp_port) for peer in peers] + list(RSPLIB_TIMERS)
        p = self.spawn(name, argv)
        self.wait_for(lambda: sctp_reachable(address, self.asap), 20,
                      "%s did not listen" % name, [p])
        return p

    def hsdump(self, address):
        out = subprocess.run(["hsdump", "%s:%d" % (address, self.enrp_port)],
                             capture_output=True, timeout=30)
        return Dump(strip_colours(out.stdout.decode("utf-8", "replace")))

    def wait_home(self, address, pe_id, home, timeout, processes):
        """
        Poll C{hsdump} at C{address} until it lists C{pe_id} with C{home}.
        """
        last = []

        def check():
            dump = self.hsdump(address)
            last[:] = [dump]
            return dump.homes.get(pe_id) == home and dump

        try:
            return self.wait_for(check, timeout, "hsdump at %s did not show $%08x with home "
                                 "$%08x" % (address, pe_id, home), processes)
        except self.failureException as e:
            raise self.failureException("%s\n--- last hsdump ---\n%s" % (
                e, last[0].text if last else "")) from None

    def pe_id(self, registrar_address, handle, processes):
        answer = self.wait_registered((registrar_address, self.asap), handle,
                                      processes=processes)
        [pe] = answer.pool_elements
        return pe.identifier


class PeeringTests(ENRPInteropCase):
    """
    Our registrar and one C{rspregistrar} peer; PEs registered at either
    show up at both; killing C{rspregistrar} makes ours take its PEs over.
    """

    def test_peeringAndTakeoverByOurs(self):
        A, B, C, D = self.net.addresses
        reg = self.rspregistrar(B, [A], RSPLIB_ID)
        ours = self.ours(A, [B])
        everyone = [ours, reg]
        pe_rsplib = self.rspserver("echo", (B, self.asap), "RSPLIBPool", C, "pe-at-rsplib",
                                   ["-loglevel=3"])
        pe_ours = self.rspserver("echo", (A, self.asap), "OurPool", D, "pe-at-ours")
        everyone += [pe_rsplib, pe_ours]
        id_rsplib = self.pe_id(B, b"RSPLIBPool", everyone)
        id_ours = self.pe_id(A, b"OurPool", everyone)
        # each registrar lists both PEs, with the right home
        for where in (A, B):
            self.wait_home(where, id_rsplib, RSPLIB_ID, 10, everyone)
            self.wait_home(where, id_ours, OUR_ID, 10, everyone)
        # resolvable at the other registrar
        answer = resolve((A, self.asap), b"RSPLIBPool")
        self.assertEqual([pe.identifier for pe in answer.pool_elements], [id_rsplib])
        answer = resolve((B, self.asap), b"OurPool")
        self.assertEqual([pe.identifier for pe in answer.pool_elements], [id_ours])
        # rspregistrar dies without a word: we take its PE over
        reg.kill()
        self.wait_home(A, id_rsplib, OUR_ID, 15, everyone)
        answer = resolve((A, self.asap), b"RSPLIBPool")
        self.assertEqual([pe.identifier for pe in answer.pool_elements], [id_rsplib])
        # the PE accepted us as its home (Keep Alive with H): it stays
        # beyond keep-alive timeouts and re-registers with us
        self.wait_for(lambda: "Home registrar is $%08x" % OUR_ID in pe_rsplib.output(), 10,
                      "rspserver did not take us as its home", everyone)
        # and answers our keep-alives over that association: no keep-alive
        # timeout during several cycles (1 s interval, 1 s timeout)
        self.holds(lambda: "keep-alive timeout for %08x" % id_rsplib not in ours.output(), 3.5,
                   "our registrar timed rspserver's keep-alive out", [ours, pe_rsplib])
        answer = resolve((A, self.asap), b"RSPLIBPool")
        self.assertEqual([pe.identifier for pe in answer.pool_elements], [id_rsplib],
                         self.describe([ours, pe_rsplib]))
        self.assertNotIn("keep-alive timeout for %08x" % id_rsplib, ours.output())
        self.assertEqual(self.hsdump(A).homes.get(id_rsplib), OUR_ID)


class TakeoverByRSPLIBTests(ENRPInteropCase):
    """
    Our registrar fails; RSPLIB's registrars take its PEs over.

    RSPLIB finishes a takeover only when every other peer acknowledged it
    and never with zero acknowledgements (C{rspregistrar-takeover.c}), so
    two RSPLIB registrars are needed besides ours.
    """

    def test_takeoverByRSPLIB(self):
        A, B, C, D = self.net.addresses
        r1 = self.rspregistrar(B, [A, C], RSPLIB_ID, "rspregistrar-1")
        r2 = self.rspregistrar(C, [A, B], RSPLIB_ID2, "rspregistrar-2")
        ours = self.ours(A, [B, C])
        pe = self.rspserver("echo", (A, self.asap), "OurPool", D, "pe-at-ours", ["-loglevel=3"])
        everyone = [ours, r1, r2, pe]
        pe_id = self.pe_id(A, b"OurPool", everyone)
        for where in (B, C):
            self.wait_home(where, pe_id, OUR_ID, 10, everyone)
        # RSPLIB counts every peer it knows, hsdump's short-lived ones
        # included (it sends Presence), among the takeover's acknowledgers:
        # let those expire (max-time-last-heard + max-time-no-response)
        # before the failure (their timers: nothing outside shows them
        # expire), all of us still running meanwhile.
        self.holds(lambda: all(p.alive() for p in everyone), 4, "a process ended", everyone)
        ours.kill()
        # One of them takes over and tells the PE: the first to find us
        # dead (the other acknowledges), the lower id when they start
        # together (RFC 5353 section 3.5.1 as RSPLIB implements it).
        homes = {"$%08x" % RSPLIB_ID: RSPLIB_ID, "$%08x" % RSPLIB_ID2: RSPLIB_ID2}

        def new_home():
            # the last home the PE announced (ours came first)
            found = re.findall(r"Home registrar is (\$[0-9a-f]{8})", pe.output())
            return bool(found) and homes.get(found[-1])

        home = self.wait_for(new_home, 15, "rspserver was not taken over by an rspregistrar",
                             [r1, r2, pe])
        for where in (B, C):
            self.wait_home(where, pe_id, home, 10, [r1, r2, pe])
        answer = resolve((C, self.asap), b"OurPool")
        self.assertEqual([p.identifier for p in answer.pool_elements], [pe_id])

