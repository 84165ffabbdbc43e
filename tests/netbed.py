"""
A test bed of several hosts on one Ethernet segment, built of Linux
network namespaces, for running RSerPool programs on different hosts as a
user would (C{tests.test_multihost}).

The bed is a "switch" namespace holding a Linux bridge, and N host
namespaces, each joined to the bridge by a veth pair: host I has the
address 10.213.0.I/24 on its C{eth0}, and C{lo} up.  Every link is made
inside the bed's own namespaces (C{ip -n SWITCH link add ... peer name eth0
netns HOST}), so the root namespace never gets an interface or a route into
the bed: only the bed's namespaces can talk to each other, and nothing is
ever sent to a 10.213.0.0/24 address from the root namespace.

    ok, reason = netbed.available()
    if not ok:
        raise unittest.SkipTest(reason)
    bed = netbed.NetBed(self, hosts=3)      # torn down with the test
    registrar = bed.twistd(1, "enrp", "--asap", "tcp:3863")
    yield registrar.wait_for(b"ready", timeout=15)
    resolve = bed.rserpool(2, "resolve", "EchoPool",
                           "--registrar", "tcp:%s:3863" % bed.address(1))
    code = yield resolve.wait_exit(timeout=10)
    ss = yield bed.run(3, "ss", "-tn")      # any program; its Process

Names are unique per process and bed (C{rsbed<pid>-<n>-sw},
C{rsbed<pid>-<n>-h<i>}), so parallel runs (C{trial -j2}) do not collide;
veth names live inside the bed's namespaces and need not be unique.  The
teardown (an C{addCleanup} of the test) kills every process started in the
bed and deletes its namespaces, which takes their veths and the bridge with
them.  Namespaces left behind by a run that died (its pid no longer
running) are deleted when the next bed is built.

A host may get more addresses (C{NetBed(..., extra={6: ["10.214.0.6/24"]})}
on its C{eth0}): a multi-homed host, for SCTP.

Inside a guest whose root filesystem is another system's (a User-Mode Linux
guest on C{hostfs}, C{../shared/tools/sctp-vm}), C{/run/netns} would be
that system's directory: namespace names made in the guest would show
(stale) on the host and the other way round, and the leftover reaper, which
judges by pids of its own kernel, could delete a live bed of the host.  So
there, before the first C{ip netns} command, the bed mounts a tmpfs of its
own on C{/run/netns} (L{isolate_netns}), seen by the guest only, and
unmounts it when the process ends.

Processes are started with C{ip netns exec HOST ...} through
L{tests.helpers.start}: L{tests.helpers.Process} collects their output and
waits for text, regular expressions or their end, always with a timeout.
"""
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys

from twisted.internet import defer

from tests.helpers import TWISTD, start

__all__ = ["available", "NetBed", "BedError", "SUBNET", "isolate_netns", "shared_root"]

#: The bed's network: host I is C{SUBNET.I}.
SUBNET = "10.213.0"
#: The prefix of every namespace of a bed (then the pid of the test run).
PREFIX = "rsbed"
#: Seconds for each C{ip} command.
IP_TIMEOUT = 20
#: Hosts per bed: 10.213.0.1 to 10.213.0.250.
MAX_HOSTS = 250

#: Where C{ip netns} keeps the names of namespaces (iproute2's NETNS_RUN_DIR).
NETNS_DIR = "/run/netns"

_NAME = re.compile(r"^%s(\d+)-" % PREFIX)
_counter = [0]
_made = set()
_available = []
#: Empty until L{isolate_netns} has run; then C{[True]} if this process
#: mounted the tmpfs on NETNS_DIR, else C{[False]}.
_isolated = []


class BedError(Exception):
    """
    An C{ip} command that builds or tears down the bed failed; the message
    names the command and its error.
    """


def _ip(*args, check=True):
    """
    Run C{ip ARGS} and return its stdout.

    @raise BedError: if it fails and C{check} is true.
    """
    argv = ["ip"] + [str(a) for a in args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BedError("%s: %s" % (" ".join(argv), e)) from None
    if check and done.returncode != 0:
        raise BedError("%s: %s" % (" ".join(argv), done.stderr.strip() or
                                   "exit %d" % done.returncode))
    return done.stdout


def _mounts():
    """
    The mount table of this process: C{(mount point, type)} pairs.
    """
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                words = line.split()
                if len(words) >= 3:
                    out.append((words[1].replace("\\040", " "), words[2]))
    except OSError:
        pass
    return out


def shared_root():
    """
    Whether the root filesystem is another system's: a User-Mode Linux
    guest booted on C{hostfs} (C{../shared/tools/sctp-vm}), where
    C{/run/netns} is the host's own directory.
    """
    return ("/", "hostfs") in _mounts()


def isolate_netns():
    """
    In a guest whose root filesystem is shared (L{shared_root}), mount a
    tmpfs on C{/run/netns} once, so that this guest's namespace names stay
    in the guest and the host's never meet its reaper; unmounted again
    when the process ends.  Nothing happens elsewhere, or when the guest
    has such a tmpfs there already (another test process of the guest
    mounted it; it stays that one's).

    @raise BedError: if the tmpfs cannot be mounted.
    """
    if _isolated:
        return
    if not shared_root() or (NETNS_DIR, "tmpfs") in _mounts():
        _isolated.append(False)
        return
    try:
        os.makedirs(NETNS_DIR, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "rsbed-netns",
                               NETNS_DIR], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BedError("mount -t tmpfs on %s: %s" % (NETNS_DIR, e)) from None
    if done.returncode != 0:
        raise BedError("mount -t tmpfs on %s: %s" % (NETNS_DIR, done.stderr.strip() or
                                                      "exit %d" % done.returncode))
    _isolated.append(True)
    atexit.register(_unisolate)


def _unisolate():
    # At exit: the beds are torn down by then; delete what a failed
    # teardown left, then take the tmpfs away (the guest's own mount).
    for name in list(_made):
        _delete(name)
    subprocess.run(["umount", NETNS_DIR], capture_output=True, timeout=IP_TIMEOUT)


def _namespaces():
    """
    The names of the network namespaces (C{ip netns list}).
    """
    out = []
    for line in _ip("netns", "list", check=False).splitlines():
        words = line.split()
        if words:
            out.append(words[0])
    return out


def _delete(namespace):
    """
    Kill what still runs in C{namespace} (by pid) and delete it; no error
    if it is gone already.
    """
    for word in _ip("netns", "pids", namespace, check=False).split():
        try:
            os.kill(int(word), signal.SIGKILL)
        except (ValueError, OSError):
            pass
    _ip("netns", "delete", namespace, check=False)
    _made.discard(namespace)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_leftovers():
    """
    Delete the namespaces of beds whose test run is gone: a bed's pid that
    no longer runs, or our own pid on a namespace this process did not make
    (a dead run whose pid came round again).

    @return: the names deleted.
    """
    gone = []
    for name in _namespaces():
        m = _NAME.match(name)
        if m is None:
            continue
        pid = int(m.group(1))
        if (pid == os.getpid() and name not in _made) or (pid != os.getpid() and not _alive(pid)):
            _delete(name)
            gone.append(name)
    return gone


def available():
    """
    Whether a bed can be built here: Linux, root, the C{ip} command
    (iproute2), and namespaces, a bridge and a veth pair can really be
    made (the answer is computed once per process).

    @return: C{(True, "")} or C{(False, reason)}, the reason one line for a
        skip message.
    """
    if not _available:
        _available.append(_probe())
    return _available[0]


def _probe():
    if not sys.platform.startswith("linux"):
        return (False, "the multi-host bed needs Linux network namespaces")
    if os.geteuid() != 0:
        return (False, "the multi-host bed needs root (ip netns); run the tests as root")
    if shutil.which("ip") is None:
        return (False, "the multi-host bed needs the ip command (apt-get install iproute2)")
    try:
        isolate_netns()
    except BedError as e:
        return (False, "cannot keep the guest's namespaces to itself: %s" % e)
    probe = "%s%d-probe" % (PREFIX, os.getpid())
    _made.add(probe)
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("-n", probe, "link", "set", "v0", "master", "br0")
    except BedError as e:
        return (False, "cannot build the multi-host bed: %s" % e)
    finally:
        _delete(probe)
    return (True, "")


class NetBed:
    """
    A switch and C{hosts} hosts, built at once; torn down at the end of
    C{test}.  Host I has 10.213.0.I/24 on its C{eth0}, and the addresses
    C{extra} gives it besides.

    @ivar test: the test the bed belongs to.
    @ivar switch: the switch namespace's name.
    @ivar namespaces: the host namespaces' names, host 1 first.
    @ivar processes: every L{tests.helpers.Process} started in the bed.
    """

    def __init__(self, test, hosts, extra=None):
        """
        @param test: the running L{twisted.trial.unittest.TestCase}.
        @param hosts: how many hosts (1 to L{MAX_HOSTS}).
        @param extra: more addresses for some hosts' C{eth0}, e.g. C{{6:
            ["10.214.0.6/24"]}} (host number: C{ADDRESS[/PREFIX]} strings,
            /24 or /64 by default): a multi-homed host.  Only hosts with an address of the same
            subnet reach them.
        @raise BedError: if the bed cannot be built (what was built is
            deleted again).
        """
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError("a bed has 1 to %d hosts, not %r" % (MAX_HOSTS, hosts))
        self.extra = {}
        for host, addresses in (extra or {}).items():
            if not 1 <= host <= hosts:
                raise ValueError("no host %r in a bed of %d" % (host, hosts))
            if isinstance(addresses, str):
                addresses = [addresses]
            self.extra[host] = [a if "/" in a else a + ("/64" if ":" in a else "/24")
                                for a in addresses]
        _counter[0] += 1
        base = "%s%d-%d" % (PREFIX, os.getpid(), _counter[0])
        self.test = test
        self.switch = base + "-sw"
        self.namespaces = ["%s-h%d" % (base, i) for i in range(1, hosts + 1)]
        self.processes = []
        isolate_netns()
        reap_leftovers()
        try:
            self._build()
        except BaseException:
            self._delete_namespaces()
            raise
        test.addCleanup(self.teardown)

    def _add(self, namespace):
        _made.add(namespace)
        _ip("netns", "add", namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def _build(self):
        sw = self.switch
        self._add(sw)
        _ip("-n", sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        _ip("-n", sw, "link", "set", "br0", "up")
        for i, host in enumerate(self.namespaces, 1):
            self._add(host)
            port = "p%d" % i
            # Made in the switch namespace with its peer straight in the
            # host's: the root namespace never sees either end.
            _ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", host)
            _ip("-n", sw, "link", "set", port, "master", "br0", "up")
            _ip("-n", host, "addr", "add", "%s/24" % self.address(i), "dev", "eth0")
            for address in self.extra.get(i, ()):
                # nodad: an IPv6 address is usable at once
                _ip("-n", host, "addr", "add", address, "dev", "eth0",
                    *(("nodad",) if ":" in address else ()))
            _ip("-n", host, "link", "set", "eth0", "up")

    def address(self, host):
        """
        The address of host C{host} (1-based): C{"10.213.0.HOST"}.
        """
        if not 1 <= host <= len(self.namespaces):
            raise ValueError("no host %r in a bed of %d" % (host, len(self.namespaces)))
        return "%s.%d" % (SUBNET, host)

    def addresses(self, host):
        """
        Every address of host C{host}, its own (L{address}) first, then
        the C{extra} ones (without their prefix length).
        """
        return [self.address(host)] + [a.split("/")[0] for a in self.extra.get(host, ())]

    def namespace(self, host):
        """
        The namespace name of host C{host} (1-based).
        """
        self.address(host)
        return self.namespaces[host - 1]

    # -- processes --------------------------------------------------------

    def command(self, host, *argv, name=None, stdin=None):
        """
        Start a program on host C{host} (C{ip netns exec HOST ARGV}):
        C{argv[0]} is looked up on C{PATH}, e.g. C{"ss"}.

        @param name: a label for failure messages (by default the command).
        @param stdin: C{bytes} for its stdin, then closed; C{None} leaves
            it open.
        @return: a L{tests.helpers.Process}, killed at the end of the test.
        """
        label = "h%d: %s" % (host, name or " ".join(str(a) for a in argv))
        proc = start(self.test, ["ip", "netns", "exec", self.namespace(host)] + list(argv),
                     name=label, stdin=stdin)
        self.processes.append(proc)
        return proc

    @defer.inlineCallbacks
    def run(self, host, *argv, timeout=10):
        """
        Run a program on host C{host} to its end.

        @return: a L{Deferred} firing with its L{tests.helpers.Process}
            (C{exit_code}, C{out}, C{err}), or failing with
            L{tests.helpers.ProcessTimeout}.
        """
        proc = self.command(host, *argv)
        yield proc.wait_exit(timeout)
        return proc

    def rserpool(self, host, *args, stdin=None):
        """
        Start C{rserpool ARGS} (C{python -m rserpool.cli}) on host C{host}.
        """
        return self.command(host, sys.executable, "-m", "rserpool.cli", *args, stdin=stdin,
                            name="rserpool " + " ".join(args))

    def twistd(self, host, *args):
        """
        Start C{twistd -n --pidfile= ARGS} (e.g. C{"enrp", "--asap",
        "tcp:3863"}) on host C{host}; it logs to its stdout.
        """
        return self.command(host, sys.executable, "-c", TWISTD, "-n", "--pidfile=", *args,
                            name="twistd -n --pidfile= " + " ".join(args))

    # -- teardown ---------------------------------------------------------

    @defer.inlineCallbacks
    def teardown(self):
        """
        Kill every process started in the bed (SIGKILL), wait for them to
        end, and delete the bed's namespaces (and so its veths and bridge).
        """
        waits = []
        for proc in self.processes:
            proc.kill()
            waits.append(proc.wait_exit(10))
        try:
            yield defer.gatherResults(waits, consumeErrors=True)
        finally:
            self._delete_namespaces()

    def _delete_namespaces(self):
        for namespace in self.namespaces + [self.switch]:
            if namespace in _made:
                _delete(namespace)
