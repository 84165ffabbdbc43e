"""
Interoperability with RSPLIB 3.4 (Debian's rsplib-registrar, rsplib-tools
and rsplib-services) over SCTP: RSPLIB's programs against our registrar,
PE and PU, in the SCTP guest (``doc/interop.rst``).

Each test builds its own little network: a dummy interface with
site-local addresses (RSPLIB's PEs refuse loopback-only hosts), our
registrar (``twistd -n enrp``) and RSPLIB's programs as processes; every
wait polls against a deadline, and the cleanup kills every process and
removes the interface.  The tests skip, saying why, outside a guest whose
kernel has SCTP, when not root, or when RSPLIB is not installed.  Run
them with ``.ci/sctp-tests`` (one guest for every SCTP test) or::

    ../shared/tools/sctp-vm python3 -m twisted.trial tests.test_interop_rsplib
"""
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from twisted.trial import unittest

from rserpool.codes import ASAP_PPID
from rserpool.transport import _sctp_abi as abi
from rserpool.transport import sctp
from rserpool.wire import HandleResolution, HandleResolutionResponse, decode, encode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RSPLIB_PROGRAMS = ("rspregistrar", "rspserver", "rspterminal", "hsdump", "pingpongclient")
#: the apt line that installs what these tests need
RSPLIB_INSTALL = (
    "apt-get install -y --no-install-recommends rsplib-registrar rsplib-tools rsplib-services"
)


def _skip_reason():
    if sctp.sctpAvailable() is not None:
        return "kernel has no SCTP (run under ../shared/tools/sctp-vm)"
    if os.geteuid() != 0:
        return "needs root to add a dummy interface (the SCTP guest is root)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    missing = [p for p in RSPLIB_PROGRAMS if shutil.which(p) is None]
    if missing:
        return "RSPLIB is not installed (missing %s): %s" % (", ".join(missing), RSPLIB_INSTALL)
    return None


SKIP = _skip_reason()

# Each test gets its own addresses and ports, so that nothing left over by
# one (an association in shutdown) meets the next.
_serial = itertools.count(1)


def strip_colours(text):
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class Network:
    """
    A dummy interface carrying C{count} site-local addresses
    10.255.N.1 ... 10.255.N.count.
    """

    def __init__(self, name, subnet, count=4):
        self.name = name
        self.addresses = ["10.255.%d.%d" % (subnet, i) for i in range(1, count + 1)]

    def up(self):
        self.down()
        subprocess.run(["ip", "link", "add", self.name, "type", "dummy"], check=True)
        for a in self.addresses:
            subprocess.run(["ip", "addr", "add", a + "/24", "dev", self.name], check=True)
        subprocess.run(["ip", "link", "set", self.name, "up", "multicast", "on"], check=True)

    def down(self):
        subprocess.run(["ip", "link", "del", self.name], stderr=subprocess.DEVNULL, check=False)


class Process:
    """
    A child process whose output goes to a log file.
    """

    def __init__(self, name, argv, log, stdin=False, env=None):
        self.name = name
        self.argv = argv
        self.log = log
        out = open(log, "wb")
        try:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            out.close()

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        with open(self.log, "rb") as f:
            return strip_colours(f.read().decode("utf-8", "replace"))

    def write(self, text):
        self.proc.stdin.write(text.encode("utf-8"))
        self.proc.stdin.flush()

    def alive(self):
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """
        Send C{sig} to the process's group (it is a session leader).
        """
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=5.0):
        """
        SIGTERM, then SIGKILL after C{timeout}; reap it.
        """
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(timeout)


def python_env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def sctp_reachable(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, abi.IPPROTO_SCTP)
    s.settimeout(1.0)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def resolve(registrar, handle, timeout=3.0):
    """
    One ASAP Handle Resolution over SCTP (PPID 11), with our codec on a
    plain socket.

    @return: the decoded L{HandleResolutionResponse}, or C{None} if none
        came.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, abi.IPPROTO_SCTP)
    s.settimeout(timeout)
    try:
        s.setsockopt(abi.SOL_SCTP, abi.SCTP_DEFAULT_SNDINFO, abi.pack_sndinfo(ASAP_PPID))
        s.setsockopt(abi.SOL_SCTP, abi.SCTP_EVENTS, abi.pack_events())
        s.connect(registrar)
        s.send(encode(HandleResolution(handle, 0xFFFFFFFF)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = decode(s.recv(65536), "asap")
            if isinstance(message, HandleResolutionResponse):
                return message
    except OSError:
        return None
    finally:
        s.close()
    return None


class InteropCase(unittest.SynchronousTestCase):
    """
    Starts processes, polls with deadlines, and cleans everything up.
    """

    if SKIP is not None:
        skip = SKIP

    def setUp(self):
        n = next(_serial)
        self.net = Network("rsit%d" % n, 100 + n)
        self.net.up()
        self.addCleanup(self.net.down)
        self.port_base = 13000 + 100 * n
        self.logs = self.mktemp()
        os.makedirs(self.logs)
        self.processes = []
        self.addCleanup(self._stop_all)

    def _stop_all(self):
        for p in reversed(self.processes):
            p.stop()

    def spawn(self, name, argv, stdin=False, python=False):
        p = Process(name, argv, os.path.join(self.logs, name + ".log"), stdin,
                    python_env() if python else None)
        self.processes.append(p)
        return p

    def wait_for(self, predicate, timeout, what, processes=()):
        """
        Poll C{predicate} every 0.1 s until it is true, or fail after
        C{timeout} seconds with C{what} and the logs of C{processes}.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        self.fail("%s within %g s%s" % (what, timeout, self.describe(processes)))

    def holds(self, predicate, duration, what, processes=()):
        """
        Poll C{predicate} every 0.1 s for C{duration} seconds, and fail
        with C{what} and the logs of C{processes} as soon as it is false:
        for what RSPLIB's processes must keep doing (or not do) while their
        timers run, which nothing outside them shows happening.
        """
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            if not predicate():
                self.fail("%s%s" % (what, self.describe(processes)))
            time.sleep(0.1)

    def describe(self, processes):
        out = []
        for p in processes:
            out.append("\n--- %s (%s)%s ---\n%s" % (
                p.name, " ".join(p.argv), "" if p.alive() else " exited %s" % p.proc.returncode,
                p.output()[-3000:]))
        return "".join(out)

    # -- our side ---------------------------------------------------------

    def our_registrar(self, address, name="registrar", extra=()):
        """
        Our registrar serving ASAP (one-to-many, as RSPLIB's) and ENRP
        over SCTP on C{address}.

        @return: the L{Process}, its ASAP and ENRP ports.
        """
        asap, enrp = self.port_base + 63, self.port_base + 1
        argv = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "-l", "-", "enrp",
            "--asap", "sctp:%d:interface=%s:mode=seqpacket" % (asap, address),
            "--enrp", "sctp:%d:interface=%s:ppid=12" % (enrp, address),
        ] + list(extra)
        p = self.spawn(name, argv, python=True)
        self.wait_for(lambda: sctp_reachable(address, asap), 20, "our registrar did not listen", [p])
        self.wait_for(lambda: sctp_reachable(address, enrp), 5, "our registrar's ENRP did not listen", [p])
        return p, asap, enrp

    def wait_registered(self, registrar, handle, count=1, timeout=20, processes=()):
        """
        Poll the registrar with Handle Resolutions until C{handle} has at
        least C{count} PEs.

        @return: the last L{HandleResolutionResponse}.
        """
        def enough():
            answer = resolve(registrar, handle)
            if answer is not None and answer.error is None and len(answer.pool_elements) >= count:
                return answer
            return None

        return self.wait_for(
            enough, timeout, "%d PE(s) did not appear in %r at %s:%d" % ((count, handle) + registrar),
            processes,
        )

    # -- RSPLIB's side ----------------------------------------------------

    def rspserver(self, service, registrar, handle, local, name, extra=()):
        return self.spawn(name, [
            "rspserver", "-" + service, "-registrar=%s:%d" % registrar, "-poolhandle=" + handle,
            "-local=%s:0" % local,
        ] + list(extra))

    def pingpong_servers(self, names):
        """
        Our registrar on the bed's first address and two C{rspserver
        -pingpong} PEs of C{PingPongPool} on the next two (processes named
        C{names}), once both are registered.

        @return: C{(the registrar's process, its (address, ASAP port), the
            PEs' processes, {PE identifier in hex: its process})}.
        """
        A, B, C = self.net.addresses[:3]
        reg, asap, _ = self.our_registrar(A)
        registrar = (A, asap)
        pe1 = self.rspserver("pingpong", registrar, "PingPongPool", B, names[0])
        pe2 = self.rspserver("pingpong", registrar, "PingPongPool", C, names[1])
        answer = self.wait_registered(registrar, b"PingPongPool", 2, processes=[reg, pe1, pe2])
        # which process is which PE: by the address each was told to use
        by_address = {B: pe1, C: pe2}
        ids = {"%08x" % pe.identifier: by_address[str(pe.user_transport.addresses[0])]
               for pe in answer.pool_elements}
        return reg, registrar, (pe1, pe2), ids


class OurRegistrarTests(InteropCase):
    """
    Scenarios 1 and 3: RSPLIB's PE and PU, and its hsdump, against our
    registrar.
    """

    def setUp(self):
        InteropCase.setUp(self)
        A, B = self.net.addresses[:2]
        self.registrar_process, asap, self.enrp = self.our_registrar(A)
        self.registrar = (A, asap)
        self.pe = self.rspserver("echo", self.registrar, "EchoPool", B, "rspserver-echo")
        self.answer = self.wait_registered(
            self.registrar, b"EchoPool", processes=[self.registrar_process, self.pe]
        )

    def test_rspserverRegisters(self):
        """
        Scenario 1: C{rspserver -echo} registers with our registrar over
        SCTP; the PE's user transport is SCTP with a control channel, on
        the address it was told to use.
        """
        [pe] = self.answer.pool_elements
        self.assertEqual(pe.user_transport.protocol, "sctp")
        self.assertEqual(pe.user_transport.transport_use, 1)
        self.assertEqual([str(a) for a in pe.user_transport.addresses], [self.net.addresses[1]])
        self.assertEqual(pe.policy.name, "RoundRobin")

    def test_rspterminalThroughOurRegistrar(self):
        """
        Scenario 1: RSPLIB's PU, C{rspterminal}, resolves C{EchoPool} at
        our registrar and its line comes back from the PE.
        """
        [pe] = self.answer.pool_elements
        term = self.spawn("rspterminal", [
            "rspterminal", "-registrar=%s:%d" % self.registrar, "-poolhandle=EchoPool",
        ], stdin=True)
        term.write("hello from rspterminal\n")
        self.wait_for(
            lambda: "hello from rspterminal" in term.output().split("Pool Handle", 1)[-1]
            and "from PE $%08x" % pe.identifier in term.output(),
            15, "rspterminal's line did not come back from the PE",
            [term, self.pe, self.registrar_process],
        )

    def test_ourPUWithRspserver(self):
        """
        Scenario 1: our PU (C{rserpool terminal}, Basic Mode: data as plain
        SCTP messages) resolves C{EchoPool} over SCTP and exchanges data
        with RSPLIB's echo PE.
        """
        term = self.spawn("rserpool-terminal", [
            sys.executable, "-m", "rserpool.cli", "terminal", "--mode", "basic", "--wait", "3",
            "--registrar", "sctp:host=%s:port=%d" % self.registrar, "EchoPool",
        ], stdin=True, python=True)
        term.write("hello from our PU\n")
        self.wait_for(
            lambda: "hello from our PU" in term.output(), 15,
            "our PU did not get its line back from rspserver -echo",
            [term, self.pe, self.registrar_process],
        )

    def test_ourResolveSeesRspserver(self):
        """
        Scenario 1: C{rserpool resolve} over SCTP lists RSPLIB's PE.
        """
        [pe] = self.answer.pool_elements
        out = subprocess.run(
            [sys.executable, "-m", "rserpool.cli", "resolve", "--registrar",
             "sctp:host=%s:port=%d" % self.registrar, "EchoPool"],
            env=python_env(), capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("%08x sctp %s:" % (pe.identifier, self.net.addresses[1]), out.stdout)

    def test_hsdumpOurRegistrar(self):
        """
        Scenario 3: RSPLIB's C{hsdump}, pointed at our registrar's ENRP
        endpoint (SCTP, PPID 12), prints our handlespace: the pool, the PE
        with its user transport and the ASAP transport we took from its
        association.
        """
        [pe] = self.answer.pool_elements
        out = subprocess.run(
            ["hsdump", "%s:%d" % (self.registrar[0], self.enrp)],
            capture_output=True, timeout=30,
        )
        text = strip_colours(out.stdout.decode("utf-8", "replace"))
        self.assertIn("Got 1 pools, 1 PEs", text)
        self.assertIn('Pool "EchoPool", Policy "RoundRobin", Protocol SCTP', text)
        self.assertIn("$%08x" % pe.identifier, text)
        self.assertRegex(text, r"userT: \{%s\} \d+/SCTP\+CtrlCh" % re.escape(self.net.addresses[1]))
        self.assertRegex(text, r"regT: +\{[^}]*%s[^}]*\} \d+/SCTP" % re.escape(self.net.addresses[1]))


class PingPongTests(InteropCase):
    """
    Scenario 5, RSPLIB's side: C{pingpongclient} (Enhanced Mode, cookies)
    keeps its session through our registrar when its PE dies and another
    takes over.
    """

    def test_pingpongFailover(self):
        reg, registrar, (pe1, pe2), ids = self.pingpong_servers(("pingpong-1", "pingpong-2"))
        client = self.spawn("pingpongclient", [
            "pingpongclient", "-registrar=%s:%d" % registrar, "-poolhandle=PingPongPool",
            "-interval=200",
        ])

        def acks():
            # (message number, PE id, the PE's reply number)
            return [(int(n), pe, int(r)) for n, pe, r in re.findall(
                r"Ack #(\d+) from PE \$([0-9a-f]{8}) \(reply #(\d+)\)", client.output())]

        first = self.wait_for(lambda: len(acks()) >= 3 and acks(), 20,
                              "pingpongclient got no answers", [client, pe1, pe2, reg])
        serving = first[-1][1]
        # the PE serving the session dies without a word
        victim = ids.get(serving)
        self.assertIsNotNone(victim, "cannot tell which PE serves $%s" % serving)
        victim.kill()
        self.wait_for(
            lambda: any(pe != serving for _, pe, _ in acks()), 30,
            "the session did not move to the other PE", [client, pe1, pe2, reg],
        )
        # The session went on: the new PE got the old one's cookie (PPP
        # cookie, src/pingpongpackets.h) in a Cookie Echo and continues its
        # reply count instead of starting again at 1.
        before = [r for _, pe, r in acks() if pe == serving]
        after = [r for _, pe, r in acks() if pe != serving]
        self.assertGreater(after[0], 1, self.describe([client]))
        self.assertGreaterEqual(after[0], before[-1], self.describe([client]))


class RSPLIBRegistrarTests(InteropCase):
    """
    Scenario 2: our PE registers with RSPLIB's C{rspregistrar};
    C{rspterminal} reaches it and C{hsdump} shows it.
    """

    def setUp(self):
        InteropCase.setUp(self)
        A, B = self.net.addresses[:2]
        asap, self.enrp = self.port_base + 63, self.port_base + 1
        self.registrar = (A, asap)
        self.rspregistrar = self.spawn("rspregistrar", [
            "rspregistrar", "-asap=%s:%d" % self.registrar, "-enrp=%s:%d" % (A, self.enrp),
            "-asapannounce=off", "-enrpannounce=off",
        ])
        self.wait_for(lambda: sctp_reachable(*self.registrar), 20,
                      "rspregistrar did not listen", [self.rspregistrar])

    def our_pe(self, mode, handle):
        pe = self.spawn("rserpool-pe-" + mode, [
            sys.executable, "-m", "rserpool.cli", "pe", "echo", "-v", "--handle", handle,
            "--mode", mode, "--registrar", "sctp:host=%s:port=%d" % self.registrar,
            "--endpoint", "sctp:0:interface=%s" % self.net.addresses[1],
        ], python=True)
        answer = self.wait_registered(self.registrar, handle.encode(), processes=[pe, self.rspregistrar])
        return pe, answer.pool_elements[0]

    def test_ourPEBasicMode(self):
        """
        Our PE in Basic Mode (data as plain SCTP messages, transport use
        "data only") registers with C{rspregistrar}; C{hsdump} lists it and
        C{rspterminal}'s line comes back from it.
        """
        pe, entry = self.our_pe("basic", "OurEcho")
        self.assertEqual(entry.user_transport.protocol, "sctp")
        self.assertEqual([str(a) for a in entry.user_transport.addresses], [self.net.addresses[1]])
        out = subprocess.run(["hsdump", "%s:%d" % (self.registrar[0], self.enrp)],
                             capture_output=True, timeout=30)
        text = strip_colours(out.stdout.decode("utf-8", "replace"))
        self.assertIn('Pool "OurEcho", Policy "RoundRobin", Protocol SCTP', text)
        self.assertIn("$%08x" % entry.identifier, text)
        term = self.spawn("rspterminal", [
            "rspterminal", "-registrar=%s:%d" % self.registrar, "-poolhandle=OurEcho",
        ], stdin=True)
        term.write("hello our PE\n")
        self.wait_for(
            lambda: "from PE $%08x> hello our PE" % entry.identifier in term.output(), 15,
            "rspterminal's line did not come back from our PE", [term, pe, self.rspregistrar],
        )

    def test_ourPEEnhancedMode(self):
        """
        Our PE in Enhanced Mode (transport use "data plus control") must
        serve RSPLIB's PU: over SCTP, data and ASAP control (Cookie,
        Cookie Echo) are told apart by PPID (RFC 5352 section 4, services
        draft section 5.1).
        """
        pe, entry = self.our_pe("enhanced", "OurEchoEnhanced")
        self.assertEqual(entry.user_transport.transport_use, 1)
        term = self.spawn("rspterminal", [
            "rspterminal", "-registrar=%s:%d" % self.registrar, "-poolhandle=OurEchoEnhanced",
        ], stdin=True)
        term.write("hello our enhanced PE\n")
        self.wait_for(
            lambda: "from PE $%08x> hello our enhanced PE" % entry.identifier in term.output(),
            10, "rspterminal's line did not come back from our Enhanced Mode PE",
            [term, pe, self.rspregistrar],
        )

