"""
RSerPool across hosts, out of the box (issue #13): registrars, pool
elements and a pool user on different hosts of a L{tests.netbed} bed
(network namespaces on one bridge), driven through the command line as a
user would, over TCP, with no address options and no ENRP options but
R2's C{--peer}: a registrar admits as ENRP peers its static peers, those
they name and the registrars of the networks its interfaces are on, so R1
admits R2 though it lists nobody; it shows its handlespace only to peers
and to its own host, so C{rserpool dump} runs on the registrar's host
(issue #14):

    host 1  R1  twistd -n --pidfile= enrp --asap tcp:3863 --enrp tcp:9901
    host 2  PE  rserpool pe --handle EchoPool --registrar tcp:10.213.0.1:3863
                    --registrar tcp:10.213.0.5:3863 echo
    host 3  PE  the same
    host 4  PU  rserpool resolve, rserpool terminal
    host 5  R2  twistd -n --pidfile= enrp --asap tcp:3863 --enrp tcp:9901
                    --peer tcp:10.213.0.1:9901; rserpool dump

(a) resolution at R1 names each PE by its own host's address; (b) the
terminal fails over to the other PE when the one it talks to is killed;
(c) R2 peers with R1 over ENRP and resolves the same pool; (d) with R1
killed, the surviving PE is at home at R2 (it hunts and registers there by
itself, RFC 5352 section 3.6) and stays registered after R2 has dropped R1.

The PEs also get C{-v}, for their log in failure messages, and the
registrars short ENRP timers (a silent peer is dropped after about 2.5 s
instead of 10 s): the test takes about 5 s.
"""
import re
import subprocess

from twisted.internet import defer
from twisted.trial import unittest

from tests import netbed

#: Registrar timers short enough for a quick test: Presence every 0.5 s,
#: a silent peer probed after 1.5 s and declared unreachable 1 s later.
TIMERS = (
    "--peer-heartbeat-cycle", "0.5",
    "--peer-max-time-last-heard", "1.5",
    "--peer-max-time-no-response", "1",
    "--takeover-expiry", "1",
    "--mentor-discovery-timeout", "1",
)

READY = re.compile(rb"registrar ([0-9a-f]{8}) ready; accepting PE addresses of scope (\S+)")
REGISTERED = re.compile(rb"registered ([0-9a-f]{8}) in EchoPool")
#: A PE as ``rserpool resolve`` and ``rserpool terminal`` print it.
PE_LINE = re.compile(r"([0-9a-f]{8}) tcp (\d+\.\d+\.\d+\.\d+):(\d+) RoundRobin")
#: A PE line of ``rserpool dump``.
DUMP_LINE = re.compile(
    r"^  ([0-9a-f]{8}) tcp (\d+\.\d+\.\d+\.\d+):(\d+) RoundRobin home=([0-9a-f]{8}) ", re.M)
#: Seconds any one wait may take.
WAIT = 15


class RootNamespaceTests(unittest.TestCase):
    """
    The bed leaves the root namespace alone.
    """

    def setUp(self):
        ok, reason = netbed.available()
        if not ok:
            raise unittest.SkipTest(reason)

    def test_nothing_in_root(self):
        bed = netbed.NetBed(self, hosts=2)
        ip = ["ip", "-o"]
        subnet = "%s.0/24" % netbed.SUBNET
        addresses = subprocess.run(ip + ["addr", "show", "to", subnet], capture_output=True,
                                   text=True, check=True).stdout
        routes = subprocess.run(ip + ["route", "show", "root", subnet], capture_output=True,
                                text=True, check=True).stdout
        self.assertEqual((addresses, routes), ("", ""))
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for name in [bed.switch] + bed.namespaces:
            self.assertIn(name, listed)


class TerminalFailoverSteps:
    """
    What the TCP and SCTP multi-host beds share: the test (the bed, then
    C{start} and steps (a) to (d)), R1's start, resolution at a registrar,
    the check of step (a) that each TCP PE is named by its host's address,
    step (b) (on host 4, C{rserpool terminal} reaches one of the PEs of
    hosts 2 and 3 (C{self.pes}, C{self.ids}); that PE is killed, and the
    next line comes back from the other) and step (c) (R2 peers with R1).
    The bed's class makes the bed (C{make_bed()}) and says how to reach a
    registrar (C{registrar_endpoint(host)}) and a registrar's ENRP port
    (C{peer_endpoint(host)}).

    @cvar wait: the bound of each wait in L{resolve} and L{step_c}, in
        seconds (step (b) waits L{WAIT}).
    """

    wait = WAIT

    @defer.inlineCallbacks
    def test_pool_across_hosts(self):
        self.bed = self.make_bed()
        yield self.start()
        yield self.step_a()
        yield self.step_b()
        yield self.step_c()
        yield self.step_d()

    @defer.inlineCallbacks
    def start_r1(self):
        """
        R1 on host 1 (C{self.r1}, its id C{self.r1_id}), once ready.
        """
        self.r1 = self.registrar(1)
        m = yield self.r1.wait_for_match(READY, self.wait)
        self.r1_id = m.group(1).decode()
        # a wildcard listener accepts addresses of the hosts' network
        self.assertEqual(m.group(2), b"site-local", self.r1.describe())

    @defer.inlineCallbacks
    def resolve(self, registrar_host, step):
        """
        C{rserpool resolve EchoPool} on the PU host at a registrar.

        @return: C{{pe_id: (address, port)}}.
        """
        proc = self.bed.rserpool(4, "resolve", "EchoPool", "--registrar",
                                 self.registrar_endpoint(registrar_host))
        code = yield proc.wait_exit(self.wait)
        self.assertEqual(code, 0, "%s: resolve failed\n%s" % (step, proc.describe()))
        found = {}
        for line in proc.out.decode().splitlines():
            m = PE_LINE.fullmatch(line)
            self.assertIsNotNone(m, "%s: unexpected resolve line %r\n%s"
                                 % (step, line, proc.describe()))
            found[m.group(1)] = (m.group(2), int(m.group(3)))
        return found

    @defer.inlineCallbacks
    def check_pes_by_address(self, step):
        """
        R1 resolves each TCP PE (C{self.pes}) by its host's address; keep
        their ports in C{self.ports}.
        """
        found = yield self.resolve(1, step)
        self.assertEqual(
            {pe_id: address for pe_id, (address, _) in found.items()},
            {self.ids[host]: self.bed.address(host) for host in self.pes},
            "%s: resolution at R1 does not name each PE by its host's address" % step)
        self.ports = {host: found[self.ids[host]][1] for host in self.pes}

    def check_mentor_sync(self, step, ready):
        """
        What else R2's "ready" line (C{ready}, its match) must say once it
        has the handlespace from R1: nothing by default.
        """

    @defer.inlineCallbacks
    def talking_to(self, step):
        """
        The PE hosts with an established TCP connection from the PU host
        (C{ss} in each PE's namespace).
        """
        hosts = []
        for host in sorted(self.pes):
            proc = yield self.bed.run(host, "ss", "-Htn", "state", "established",
                                      "dst", self.bed.address(4), timeout=WAIT)
            self.assertEqual(proc.exit_code, 0, "%s: ss failed\n%s" % (step, proc.describe()))
            if proc.out.strip():
                hosts.append(host)
        return hosts

    @defer.inlineCallbacks
    def step_b(self):
        step = "(b) terminal fails over"
        bed = self.bed
        terminal = bed.rserpool(4, "terminal", "EchoPool", "--registrar",
                                self.registrar_endpoint(1), "--wait", "0.5")
        terminal.write(b"first line\n")
        yield terminal.wait_for(b"first line\n", WAIT)
        # Which PE: the terminal says so ("connected to <PE>" on stderr),
        # and the connection shows in that PE's namespace.
        hosts = yield self.talking_to(step)
        self.assertEqual(len(hosts), 1, "%s: PE hosts connected to the PU: %r\n%s"
                         % (step, hosts, terminal.describe()))
        first = hosts[0]
        m = yield terminal.wait_for_match(re.compile(r"connected to (.*)"), WAIT, stream="err")
        pe = PE_LINE.search(m.group(1))
        self.assertIsNotNone(pe, "%s: %r names no PE" % (step, m.group(0)))
        self.assertEqual(pe.group(1, 2), (self.ids[first], bed.address(first)),
                         "%s: %r, but ss shows host %d" % (step, m.group(0), first))
        other = 5 - first  # 2 <-> 3
        self.survivor = other
        # The terminal may fail over as soon as the connection breaks,
        # before the next line is typed.
        before = (len(terminal.out), len(terminal.err))
        killed = self.pes.pop(first)
        killed.kill()
        yield killed.wait_exit(WAIT)
        terminal.write(b"second line\n")
        yield terminal.wait_for(b"second line\n", WAIT, start=before[0])
        m = yield terminal.wait_for_match(re.compile(r"failed over to (.*)"), WAIT,
                                          stream="err", start=before[1])
        pe = PE_LINE.search(m.group(1))
        self.assertIsNotNone(pe, "%s: %r names no PE" % (step, m.group(0)))
        self.assertEqual(pe.group(1, 2), (self.ids[other], bed.address(other)),
                         "%s: failed over to the wrong PE\n%s" % (step, terminal.describe()))
        hosts = yield self.talking_to(step)
        self.assertEqual(hosts, [other], "%s: PE hosts connected to the PU after the "
                         "failover\n%s" % (step, terminal.describe()))
        terminal.close_stdin()
        code = yield terminal.wait_exit(WAIT)
        self.assertEqual((code, terminal.out), (0, b"first line\nsecond line\n"),
                         "%s\n%s" % (step, terminal.describe()))
    @defer.inlineCallbacks
    def step_c(self):
        step = "(c) R2 peers with R1"
        bed = self.bed
        self.r2 = self.registrar(5, "--peer", self.peer_endpoint(1))
        m = yield self.r2.wait_for_match(READY, self.wait)
        self.r2_id = m.group(1).decode()
        m = yield self.r2.wait_for_match(
            re.compile(rb"ENRP server %s ready \(([^,]*), (\d+) PEs\)" % self.r2_id.encode()),
            self.wait)
        self.assertEqual(m.group(1).decode(), "handlespace from mentor %s" % self.r1_id,
                         "%s\n%s" % (step, self.r2.describe()))
        self.check_mentor_sync(step, m)
        at_r1, at_r2 = self.resolve(1, step), self.resolve(5, step)
        at_r1 = yield at_r1
        at_r2 = yield at_r2
        survivor = self.survivor
        self.assertEqual(at_r1, {self.ids[survivor]: (bed.address(survivor),
                                                      self.ports[survivor])}, step)
        self.assertEqual(at_r2, at_r1, "%s: R2 resolves otherwise than R1" % step)


class MultiHostTests(TerminalFailoverSteps, unittest.TestCase):
    """
    Two registrars, two PEs and a PU on five hosts.
    """

    timeout = 60

    def setUp(self):
        ok, reason = netbed.available()
        if not ok:
            raise unittest.SkipTest(reason)

    def registrar(self, host, *more):
        return self.bed.twistd(host, "enrp", "--asap", "tcp:3863", "--enrp", "tcp:9901",
                               *(TIMERS + more))

    def registrar_endpoint(self, host):
        return "tcp:%s:3863" % self.bed.address(host)

    def peer_endpoint(self, host):
        return "tcp:%s:9901" % self.bed.address(host)

    def make_bed(self):
        return netbed.NetBed(self, hosts=5)

    @defer.inlineCallbacks
    def start(self):
        bed = self.bed
        yield self.start_r1()
        registrars = []
        for host in (1, 5):
            registrars += ["--registrar", "tcp:%s:3863" % bed.address(host)]
        # -v: the PEs' log on stderr, for failure messages
        self.pes = {host: bed.rserpool(host, "pe", "--handle", "EchoPool", *registrars,
                                       "-v", "echo")
                    for host in (2, 3)}

    @defer.inlineCallbacks
    def step_a(self):
        step = "(a) PEs registered by their own addresses"
        self.ids = {}
        for host, pe in sorted(self.pes.items()):
            m = yield pe.wait_for_match(REGISTERED, WAIT)
            self.ids[host] = m.group(1).decode()
        yield self.check_pes_by_address(step)

    @defer.inlineCallbacks
    def step_d(self):
        step = "(d) R2 takes over from R1"
        bed = self.bed
        survivor, pe_id = self.survivor, self.ids[self.survivor]
        start = len(self.r2.out)
        self.r1.kill()
        yield self.r1.wait_exit(WAIT)
        # The PE loses its registrar and registers at the next one, R2.
        yield self.r2.wait_for_match(
            re.compile(rb"registered %s in \S*EchoPool\S* from %s:"
                       % (pe_id.encode(), re.escape(bed.address(survivor).encode()))),
            WAIT, start=start)
        # R2 finds R1 silent and drops it (or takes its PEs over).
        yield self.r2.wait_for_match(
            re.compile(rb"ENRP (peer %s removed from the peer list|takeover of %s done)"
                       % ((self.r1_id.encode(),) * 2)), WAIT, start=start)
        # on R2's host: a registrar shows its handlespace to its own host
        dump = bed.rserpool(5, "dump", "--registrar", "tcp:%s:9901" % bed.address(5))
        code = yield dump.wait_exit(WAIT)
        self.assertEqual(code, 0, "%s\n%s" % (step, dump.describe()))
        text = dump.out.decode()
        self.assertIn("registrar %s: 1 pool(s), 1 PE(s)" % self.r2_id, text, step)
        # R2 listens on the wildcard; the dump names it by the address asked.
        self.assertIn("peer %s tcp %s:9901\n" % (self.r2_id, bed.address(5)), text, step)
        self.assertNotIn("0.0.0.0", text, step)
        self.assertEqual(
            DUMP_LINE.findall(text),
            [(pe_id, bed.address(survivor), str(self.ports[survivor]), self.r2_id)],
            "%s: the surviving PE at home at R2\n%s" % (step, dump.describe()))
        at_r2 = yield self.resolve(5, step)
        self.assertEqual(at_r2, {pe_id: (bed.address(survivor), self.ports[survivor])}, step)
        self.assertFalse(self.pes[survivor].done, self.pes[survivor].describe())


class MeshTests(unittest.TestCase):
    """
    Registrars listening for ENRP on the wildcard address find the peers
    of their peers: R2 peers with R1, R3 with R2 only, and R3 learns R1
    from R2's List Response by R1's address (not the 0.0.0.0 R1's Presence
    names, which would lead R3 to its own ENRP endpoint).
    """

    timeout = 45

    def setUp(self):
        ok, reason = netbed.available()
        if not ok:
            raise unittest.SkipTest(reason)

    @defer.inlineCallbacks
    def test_peers_of_peers(self):
        bed = netbed.NetBed(self, hosts=3)
        ids, registrars = {}, {}
        for host, peer in ((1, None), (2, 1), (3, 2)):
            more = ("--peer", "tcp:%s:9901" % bed.address(peer)) if peer else ()
            r = registrars[host] = bed.twistd(host, "enrp", "--asap", "tcp:3863", "--enrp",
                                              "tcp:9901", *(TIMERS + more))
            m = yield r.wait_for_match(READY, WAIT)
            ids[host] = m.group(1)
            if peer:
                yield r.wait_for_match(re.compile(
                    rb"ENRP server %s ready \(handlespace from mentor %s" % (ids[host], ids[peer])),
                    WAIT)
        # R3 reached R1: R1 hears of R3 (its only way to learn of it).
        yield registrars[1].wait_for_match(re.compile(rb"ENRP peer %s added" % ids[3]), WAIT)
        for host, other in ((3, 1), (1, 3)):
            dump = bed.rserpool(host, "dump", "--registrar", "tcp:%s:9901" % bed.address(host))
            code = yield dump.wait_exit(WAIT)
            self.assertEqual(code, 0, dump.describe())
            self.assertRegex(dump.out, re.compile(
                rb"^peer %s .*\b%s\b" % (ids[other], re.escape(bed.address(other).encode())),
                re.M), "R%d does not list R%d by its address\n%s" % (host, other, dump.describe()))
        for host in (1, 3):
            self.assertNotIn(b"removed from the peer list", registrars[host].out,
                             registrars[host].describe())
