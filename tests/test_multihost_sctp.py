"""
RSerPool across hosts over SCTP (issue #13): the SCTP variant of
L{tests.test_multihost}, on a L{tests.netbed} bed inside the SCTP guest
(C{../shared/tools/sctp-vm}; C{.ci/sctp-tests} runs it), driven through
the command line as a user would, with no address options:

    host 1  R1  twistd -n --pidfile= enrp --asap sctp:3863 --enrp sctp:9901
    host 2  PE  rserpool pe --handle EchoPool
                    --registrar sctp:host=10.213.0.1:port=3863
                    --registrar sctp:10.213.0.5:3863 echo
    host 3  PE  the same
    host 4  PU  rserpool resolve, rserpool terminal (rserpool dump on R2's host)
    host 5  R2  twistd -n --pidfile= enrp --asap sctp:3863 --enrp sctp:9901
                    --peer sctp:host=10.213.0.1:port=9901:ppid=12
    host 6  PE  on 10.213.0.6 and 10.214.0.6: rserpool pe --handle SctpPool
                    (the same registrars) --endpoint sctp:0 echo

(The PEs name R2 in the short form C{sctp:HOST:PORT}, as C{tcp:} endpoints
are written, and R1 in the long one: both work.)

(a) Resolution at R1 names each PE by its own host's address; the PE of
host 6, serving over SCTP on two addresses, registers both (multi-homing:
the addresses of its registrar association).  (b) The terminal fails over
to the other PE when the one it talks to is killed.  (c) R2 peers with R1
over ENRP and resolves the same pool.  (d) With R1 killed (SIGKILL, so the
kernel aborts its associations), every surviving PE is at home at R2: it
hunts and registers there by itself (RFC 5352 section 3.6), before R2 finds
R1 silent; R2 then drops R1 or takes over what R1 still owned.

L{RSPLIBRegistrarTests}: our PEs with no address options register with
RSPLIB's C{rspregistrar} on another host; C{hsdump} lists them by their
hosts' addresses (both of a multi-homed one), our terminal reaches the TCP
one and RSPLIB's C{rspterminal} the SCTP one.

Registrars get short timers (a silent peer is dropped after about 2.5 s
instead of 10 s; Endpoint Keep Alive every second).  The tests skip outside
a guest whose kernel has SCTP, without the bed (root, iproute2), or, for
RSPLIB's, without RSPLIB.
"""
import os
import re
import shutil
import sys

from twisted.internet import defer
from twisted.trial import unittest

from rserpool.transport import sctp
from tests import netbed
from tests import test_multihost as multihost
from tests.test_multihost import TerminalFailoverSteps

#: Registrar timers short enough for a quick test: Presence every 0.5 s,
#: a silent peer probed after 1.5 s and declared unreachable 1 s later;
#: Endpoint Keep Alive (which tells a PE its home registrar) every second.
TIMERS = multihost.TIMERS + ("--keep-alive-interval", "1")

#: What ``rserpool pe`` prints once registered.
REGISTERED = re.compile(rb"registered ([0-9a-f]{8}) in (\S+): (\w+) (\S+):(\d+) ")
#: A PE line of ``rserpool dump``.
DUMP_LINE = re.compile(
    r"^  ([0-9a-f]{8}) (tcp|sctp) ([\d.,]+):(\d+) RoundRobin home=([0-9a-f]{8}) ",
    re.M)
#: A pool user printing each PE of a pool with every address of its user
#: transport, as the registrar holds it, from the PoolUser API itself:
#: ``python -c ADDRESSES REGISTRAR HANDLE``.
ADDRESSES = """\
import sys
from twisted.internet import task
from rserpool.pu import PoolUser

def main(reactor, registrar, handle):
    pu = PoolUser(reactor, registrars=[registrar])

    def show(infos):
        pu.close()
        for pe in infos:
            print("%08x %s %s %d" % (pe.identifier, pe.protocol,
                                     ",".join(str(a) for a in pe.addresses), pe.port))

    return pu.resolve(handle).addCallback(show)

task.react(main, sys.argv[1:])
"""
#: The second network of a multi-homed host (host I: 10.214.0.I/24).
SECOND = "10.214.0"
#: Seconds any one wait may take (the guest is slow: a Python program
#: takes about 2 s to start).
WAIT = 20

RSPLIB_PROGRAMS = ("rspregistrar", "hsdump", "rspterminal")
RSPLIB_INSTALL = (
    "apt-get install -y --no-install-recommends rsplib-registrar rsplib-tools rsplib-services")


def _skip_reason():
    """
    Why the bed's SCTP tests cannot run here, or C{None}.
    """
    if sctp.sctpAvailable() is not None:
        return ("kernel has no SCTP: run in the SCTP guest (.ci/sctp-tests, or "
                "../shared/tools/sctp-vm python3 -m twisted.trial tests.test_multihost_sctp)")
    ok, reason = netbed.available()
    if not ok:
        return reason
    return None


def _rsplib_missing():
    missing = [p for p in RSPLIB_PROGRAMS if shutil.which(p) is None]
    if missing:
        return "RSPLIB is not installed (missing %s): %s" % (", ".join(missing), RSPLIB_INSTALL)
    return None


def strip_colours(text):
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def asap(host):
    """
    C{--registrar} for the registrar of bed host C{host} over SCTP.
    """
    return "sctp:host=%s.%d:port=3863" % (netbed.SUBNET, host)


class GuestNamespaceTests(unittest.TestCase):
    """
    In the guest, whose root filesystem is the host's, the bed keeps its
    namespace names on a tmpfs of the guest's own (L{netbed.isolate_netns}):
    nothing of the guest's beds shows on the host, and the guest's leftover
    reaper never sees (nor deletes) a live bed of the host.
    """

    def setUp(self):
        reason = _skip_reason()
        if reason is not None:
            raise unittest.SkipTest(reason)
        if not netbed.shared_root():
            raise unittest.SkipTest("not in a guest whose root filesystem is the host's")

    def test_private_netns(self):
        bed = netbed.NetBed(self, hosts=1)
        self.assertIn((netbed.NETNS_DIR, "tmpfs"), netbed._mounts())
        self.assertNotEqual(os.stat(netbed.NETNS_DIR).st_dev, os.stat("/").st_dev)
        self.assertIn(bed.namespace(1), os.listdir(netbed.NETNS_DIR))


class MultiHostSCTPTests(TerminalFailoverSteps, unittest.TestCase):
    """
    Two registrars, three PEs (one multi-homed) and a PU on six hosts,
    every registrar association over SCTP.
    """

    timeout = 150
    wait = WAIT

    def setUp(self):
        reason = _skip_reason()
        if reason is not None:
            raise unittest.SkipTest(reason)

    def registrar(self, host, *more):
        return self.bed.twistd(host, "enrp", "--asap", "sctp:3863", "--enrp", "sctp:9901",
                               *(TIMERS + more))

    def registrar_endpoint(self, host):
        return asap(host)

    def peer_endpoint(self, host):
        return "sctp:host=%s:port=9901:ppid=12" % self.bed.address(host)

    def make_bed(self):
        return netbed.NetBed(self, hosts=6, extra={6: ["%s.6/24" % SECOND]})

    @defer.inlineCallbacks
    def start(self):
        bed = self.bed
        yield self.start_r1()
        registrars = ["--registrar", asap(1), "--registrar", "sctp:%s:3863" % bed.address(5)]
        # -v: the PEs' log on stderr, for failure messages and the home
        # registrar
        self.pes = {host: bed.rserpool(host, "pe", "--handle", "EchoPool", *registrars,
                                       "-v", "echo")
                    for host in (2, 3)}
        self.sctp_pe = bed.rserpool(6, "pe", "--handle", "SctpPool", *registrars,
                                    "--endpoint", "sctp:0", "-v", "echo")

    @defer.inlineCallbacks
    def step_a(self):
        step = "(a) PEs registered by their own addresses"
        bed = self.bed
        self.ids = {}
        for host, pe in sorted(self.pes.items()):
            m = yield pe.wait_for_match(REGISTERED, WAIT)
            self.ids[host] = m.group(1).decode()
        # Host 6 serves over SCTP on the wildcard address: it registers
        # every address of its registrar association, both of its own.
        m = yield self.sctp_pe.wait_for_match(REGISTERED, WAIT)
        self.sctp_id = m.group(1).decode()
        both = ",".join(bed.addresses(6))
        self.assertEqual((m.group(3), m.group(4)), (b"sctp", both.encode()),
                         "%s: the multi-homed PE\n%s" % (step, self.sctp_pe.describe()))
        self.sctp_port = int(m.group(5))
        # R1 holds both (a pool user sees them) ...
        pu = bed.command(4, sys.executable, "-c", ADDRESSES, asap(1), "SctpPool",
                         name="python PU: SctpPool at R1, every address")
        code = yield pu.wait_exit(WAIT)
        self.assertEqual(
            (code, pu.out.decode()), (0, "%s sctp %s %d\n" % (self.sctp_id, both, self.sctp_port)),
            "%s: R1 does not hold both addresses of the multi-homed PE\n%s"
            % (step, pu.describe()))
        # ... and each TCP PE by its host's address.
        yield self.check_pes_by_address(step)

    def check_mentor_sync(self, step, ready):
        self.assertEqual(ready.group(2), b"2", "%s: R2 got %s PEs from R1, not 2\n%s"
                         % (step, ready.group(2).decode(), self.r2.describe()))

    @defer.inlineCallbacks
    def step_d(self):
        step = "(d) every PE at home at R2 once R1 is gone"
        bed = self.bed
        survivor = self.survivor
        pes = {survivor: (self.pes[survivor], self.ids[survivor], "EchoPool"),
               6: (self.sctp_pe, self.sctp_id, "SctpPool")}
        start = len(self.r2.out)
        errs = {host: len(pe.err) for host, (pe, _, _) in pes.items()}
        self.r1.kill()
        yield self.r1.wait_exit(WAIT)
        for host, (pe, pe_id, handle) in sorted(pes.items()):
            # The PE loses its association to R1 (the kernel aborts it) and
            # registers at the next registrar of its list, R2 ...
            yield pe.wait_for_match(
                re.compile(r"pool element %s (?:re-)?registered in b'%s' at sctp:%s:3863"
                           % (pe_id, handle, re.escape(bed.address(5)))),
                WAIT, stream="err", start=errs[host])
            yield self.r2.wait_for_match(
                re.compile(rb"registered %s in \S*%s\S* from %s:"
                           % (pe_id.encode(), handle.encode(),
                              re.escape(bed.address(host).encode()))),
                WAIT, start=start)
            # ... whose Endpoint Keep Alive tells it its new home.
            yield pe.wait_for_match(
                "pool element %s: home registrar is %s" % (pe_id, self.r2_id),
                WAIT, stream="err", start=errs[host])
        # R2 finds R1 silent and drops it (or takes over what it still
        # owned: nothing, its PEs are all at R2 already).
        yield self.r2.wait_for_match(
            re.compile(rb"ENRP (peer %s removed from the peer list|takeover of %s done)"
                       % ((self.r1_id.encode(),) * 2)), WAIT, start=start)
        # on R2's host: a registrar shows its handlespace to its own host
        dump = bed.rserpool(5, "dump", "--registrar", "sctp:host=%s:port=9901:ppid=12"
                            % bed.address(5))
        code = yield dump.wait_exit(WAIT)
        self.assertEqual(code, 0, "%s\n%s" % (step, dump.describe()))
        text = dump.out.decode()
        self.assertIn("registrar %s: 2 pool(s), 2 PE(s)" % self.r2_id, text,
                      "%s\n%s" % (step, dump.describe()))
        self.assertEqual(
            sorted(DUMP_LINE.findall(text)),
            sorted([(self.ids[survivor], "tcp", bed.address(survivor),
                     str(self.ports[survivor]), self.r2_id),
                    # every address of the multi-homed PE
                    (self.sctp_id, "sctp", ",".join(bed.addresses(6)), str(self.sctp_port),
                     self.r2_id)]),
            "%s: the surviving PEs at home at R2\n%s" % (step, dump.describe()))
        self.assertNotIn(self.r1_id, re.findall(r"^peer ([0-9a-f]{8})", text, re.M),
                         "%s: R2 still lists R1\n%s" % (step, dump.describe()))
        at_r2 = yield self.resolve(5, step)
        self.assertEqual(at_r2, {self.ids[survivor]: (bed.address(survivor),
                                                      self.ports[survivor])}, step)
        for pe, _, _ in pes.values():
            self.assertFalse(pe.done, pe.describe())


class RSPLIBRegistrarTests(unittest.TestCase):
    """
    Our PEs, with no address options, at RSPLIB's registrar on another
    host.
    """

    timeout = 90

    def setUp(self):
        reason = _skip_reason() or _rsplib_missing()
        if reason is not None:
            raise unittest.SkipTest(reason)

    @defer.inlineCallbacks
    def test_our_pes_at_rspregistrar(self):
        """
        C{rspregistrar} on host 1; our TCP PE on host 2 and our SCTP PE on
        host 4 (two addresses) register with it; from host 3 C{hsdump}
        lists each by its host's addresses, our terminal's line comes back
        from the TCP one and C{rspterminal}'s from the SCTP one (RSPLIB's
        PUs speak SCTP only).
        """
        bed = netbed.NetBed(self, hosts=4, extra={4: ["%s.4/24" % SECOND]})
        registrar = bed.command(1, "rspregistrar", "-asap=0.0.0.0:3863", "-enrp=0.0.0.0:9901",
                                "-asapannounce=off", "-enrpannounce=off")
        # The PEs hunt (every second) until rspregistrar listens.
        tcp_pe = bed.rserpool(2, "pe", "--handle", "OurPool", "--registrar", asap(1), "-v", "echo")
        sctp_pe = bed.rserpool(4, "pe", "--handle", "OurSctpPool", "--registrar", asap(1),
                               "--endpoint", "sctp:0", "-v", "echo")
        m = yield tcp_pe.wait_for_match(REGISTERED, WAIT)
        tcp_id, tcp_port = m.group(1).decode(), int(m.group(5))
        self.assertEqual(m.group(3, 4), (b"tcp", bed.address(2).encode()), tcp_pe.describe())
        m = yield sctp_pe.wait_for_match(REGISTERED, WAIT)
        sctp_id, sctp_port = m.group(1).decode(), int(m.group(5))
        self.assertEqual(m.group(3, 4), (b"sctp", ",".join(bed.addresses(4)).encode()),
                         sctp_pe.describe())

        hsdump = yield bed.run(3, "hsdump", "%s:9901" % bed.address(1), timeout=WAIT)
        text = strip_colours(hsdump.out.decode("utf-8", "replace"))
        why = "%s\n%s" % (hsdump.describe(), registrar.describe())
        self.assertIn("Got 2 pools, 2 PEs", text, why)
        self.assertIn('Pool "OurPool", Policy "RoundRobin", Protocol TCP', text, why)
        self.assertIn('Pool "OurSctpPool", Policy "RoundRobin", Protocol SCTP', text, why)
        self.assertIn("$%s" % tcp_id, text, why)
        self.assertIn("$%s" % sctp_id, text, why)
        self.assertIn("userT: {%s} %d/TCP+CtrlCh" % (bed.address(2), tcp_port), text, why)
        self.assertIn("userT: {%s} %d/SCTP+CtrlCh" % (", ".join(bed.addresses(4)), sctp_port),
                      text, why)

        terminal = bed.rserpool(3, "terminal", "OurPool", "--registrar", asap(1),
                                "--wait", "0.5", stdin=b"hello from our PU\n")
        rspterminal = bed.command(3, "rspterminal", "-registrar=%s:3863" % bed.address(1),
                                  "-poolhandle=OurSctpPool")
        rspterminal.write(b"hello from rspterminal\n")
        code = yield terminal.wait_exit(WAIT)
        self.assertEqual((code, terminal.out), (0, b"hello from our PU\n"),
                         "%s\n%s" % (terminal.describe(), tcp_pe.describe()))
        self.assertIn("connected to %s tcp %s:%d RoundRobin" % (tcp_id, bed.address(2), tcp_port),
                      terminal.err.decode(), terminal.describe())
        yield rspterminal.wait_for_match(
            re.compile(r"from PE \$%s> hello from rspterminal" % sctp_id), WAIT)
        for proc in (registrar, tcp_pe, sctp_pe):
            self.assertFalse(proc.done, proc.describe())
