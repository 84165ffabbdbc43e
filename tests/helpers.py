"""
Helpers for tests that run programs (C{rserpool}, C{twistd enrp}, system
tools) as child processes: L{Process} collects a child's output and waits
for it, as Deferreds with timeouts; L{start} and L{spawn} start one with
the checkout on C{PYTHONPATH} and kill it at the end of the test.

Every wait is bounded: a timeout fails the Deferred with L{ProcessTimeout},
whose message holds what the process printed so far.  L{eventually} is the
one way a test polls for something to happen (over real sockets or child
processes: a test about logic drives a L{twisted.internet.task.Clock}
instead); it fails with L{WaitTimeout}, naming what was awaited.

Fixtures shared by other tests stand here too: L{Recorder}, a message
receiver that records its events; L{Driven}, a sans-IO machine driven as
its adapter drives it; L{PESessionPeer}, a PE's session layer over a
L{StringTransport} with a peer that reads its frames; L{running},
L{loopback_registrar} and L{tap_registrar}, services started for one test
and stopped after it.

Ports without a race: a listener takes port 0 and a test learns the port
(L{listening_port} from a child's log, L{bound_udp_port} from C{/proc});
L{refused_port} is a port where nothing listens and L{shared_udp_port} a
multicast group's, both held for the test's life; L{free_port} is for what
remains (see there).
"""
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import sys

from twisted.internet import defer, protocol, reactor, task
from zope.interface import implementer

from rserpool.interfaces import IMessageConnection, NotAvailable
from rserpool.wire import decode, encode

__all__ = ["ROOT", "TWISTD", "Driven", "FakeConnection", "PESessionPeer", "Process",
           "ProcessTimeout", "Recorder", "WaitTimeout", "bound_udp_port", "complete_tcp",
           "eventually", "free_port", "listening_port", "loopback_registrar", "refused_port",
           "running", "shared_udp_port", "start", "spawn", "tap_registrar", "write_keys"]

#: The checkout's root: the child processes import rserpool from here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: C{python -c TWISTD ARGS} runs C{twistd ARGS} with this interpreter.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"

#: 127.0.0.1, the address of the fakes.
LOOPBACK = ipaddress.ip_address("127.0.0.1")

#: How much of a stream a failure message quotes (its end).
_QUOTE = 3000


class ProcessTimeout(AssertionError):
    """
    A process did not print what a test waited for, or did not end, in
    time.
    """


class WaitTimeout(AssertionError):
    """
    A condition a test polled with L{eventually} did not come true in time.
    """


@defer.inlineCallbacks
def eventually(condition, what, timeout=10.0, step=0.02, clock=reactor):
    """
    Poll C{condition} until it returns a true value, every C{step} seconds
    and for at most C{timeout} seconds of C{clock}.

    For what happens over real sockets or in child processes; a test about
    protocol logic drives a L{twisted.internet.task.Clock} instead of
    waiting.

    @param condition: a callable without arguments; it may return a
        L{Deferred} (a condition that asks a server), whose result counts.
        Its exceptions are not caught.
    @param what: what is awaited, for the failure message ("the PE to
        register"), or a callable that returns it (called on timeout, to
        describe the state at that moment).
    @param timeout: seconds before giving up.
    @param step: seconds between two polls.
    @param clock: the L{IReactorTime} to poll on (the reactor by default).
    @return: a L{Deferred} that fires with the condition's first true
        value, or fails with L{WaitTimeout} naming C{what} and the last
        value.
    """
    deadline = clock.seconds() + timeout
    while True:
        value = yield defer.maybeDeferred(condition)
        if value:
            return value
        if clock.seconds() >= deadline:
            break
        yield task.deferLater(clock, step, lambda: None)
    if callable(what):
        what = what()
    raise WaitTimeout("timed out after %g s waiting for %s (last: %r)" % (timeout, what, value))


def complete_tcp(memory_reactor, client=("127.0.0.1", 40000)):
    """
    Connect the first pending C{connectTCP} of a
    L{twisted.internet.testing.MemoryReactorClock} to the C{listenTCP} of
    the same port, over L{twisted.test.iosim} transports whose addresses are
    L{IPv4Address}es (iosim's own C{ConnectionCompleter} gives them
    C{FakeAddress}es, whose host a registrar cannot check a PE's addresses
    against, RFC 5355).

    @param client: the client side's C{(host, port)}.
    @return: the L{twisted.test.iosim.IOPump} of the connection, on the
        reactor's clock.
    """
    from twisted.internet.address import IPv4Address
    from twisted.test import iosim

    host, port, client_factory, _, _ = memory_reactor.tcpClients.pop(0)
    memory_reactor.connectors.pop(0)
    [server_factory] = [f for (p, f, _, _) in memory_reactor.tcpServers if p == port]
    client_protocol = client_factory.buildProtocol(None)
    server_protocol = server_factory.buildProtocol(None)
    client_address = IPv4Address("TCP", *client)
    server_address = IPv4Address("TCP", host, port)
    return iosim.connect(
        server_protocol, iosim.FakeTransport(server_protocol, True, server_address, client_address),
        client_protocol, iosim.FakeTransport(client_protocol, False, client_address, server_address),
        clock=memory_reactor)


def _tail(data):
    if len(data) > _QUOTE:
        data = b"..." + data[-_QUOTE:]
    return data.decode("utf-8", "replace")


class Process(protocol.ProcessProtocol):
    """
    A child process whose output is collected.

    @ivar name: a label for failure messages.
    @ivar out: everything read from its stdout so far (C{bytes}).
    @ivar err: everything read from its stderr so far (C{bytes}).
    @ivar ended: a L{Deferred} that fires with the exit code (C{None} when
        a signal ended it) once the process has ended.
    @ivar exit_code: the exit code, once ended (C{None} after a signal).
    @ivar signal: the signal that ended it, or C{None}.
    """

    def __init__(self, name=None, clock=None):
        self.name = name or "process"
        self.clock = clock if clock is not None else reactor
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()
        self.exit_code = None
        self.signal = None
        self.done = False
        self._watch = []
        self._exit_waiters = []

    # -- ProcessProtocol --------------------------------------------------

    def outReceived(self, data):
        self.out += data
        self._check()

    def errReceived(self, data):
        self.err += data
        self._check()

    def processEnded(self, reason):
        self.done = True
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.signal = getattr(reason.value, "signal", None)
        watch, self._watch = self._watch, []
        for _, what, _, d, call in watch:
            call.cancel()
            d.errback(AssertionError("%s ended (%s) before printing %s\n%s" % (
                self.name, self.status(), what, self.describe())))
        waiters, self._exit_waiters = self._exit_waiters, []
        for d, call in waiters:
            call.cancel()
            d.callback(self.exit_code)
        self.ended.callback(self.exit_code)

    # -- waiting ----------------------------------------------------------

    def _search(self, stream, matcher, start):
        buffer = self.out if stream == "out" else self.err
        return matcher(buffer, start)

    def _check(self):
        for item in list(self._watch):
            stream, what, matcher, d, call = item
            found = self._search(stream, matcher, matcher.start)
            if found is not None:
                self._watch.remove(item)
                call.cancel()
                d.callback(found)

    def wait_for_match(self, pattern, timeout=15, stream="out", start=0):
        """
        Wait until C{pattern} appears in the process's output.

        @param pattern: C{bytes} or C{str} to find as it is, or a compiled
            regular expression (of C{bytes}, or of C{str} matched against
            the output decoded as UTF-8).
        @param timeout: seconds to wait.
        @param stream: C{"out"} or C{"err"}.
        @param start: the offset in the stream to search from (the length
            of the stream before the awaited event, to skip what came
            before).
        @return: a L{Deferred} firing with the C{re.Match}, or failing with
            L{ProcessTimeout}, or with C{AssertionError} if the process
            ends first.
        """
        if stream not in ("out", "err"):
            raise ValueError("stream is 'out' or 'err', not %r" % (stream,))
        if isinstance(pattern, (bytes, str)):
            literal = pattern.encode("utf-8") if isinstance(pattern, str) else pattern
            regex = re.compile(re.escape(literal))
            what = repr(literal)
        else:
            regex = pattern
            what = "/%s/" % (pattern.pattern if isinstance(pattern.pattern, str)
                             else pattern.pattern.decode("utf-8", "replace"))

        def matcher(buffer, offset):
            if isinstance(regex.pattern, str):
                return regex.search(buffer.decode("utf-8", "replace"), len(
                    buffer[:offset].decode("utf-8", "replace")))
            return regex.search(buffer, offset)

        matcher.start = start
        what = "%s on std%s" % (what, stream)
        found = self._search(stream, matcher, start)
        if found is not None:
            return defer.succeed(found)
        if self.done:
            return defer.fail(AssertionError("%s ended (%s) without printing %s\n%s" % (
                self.name, self.status(), what, self.describe())))
        d = defer.Deferred()

        def expired():
            for item in self._watch:
                if item[3] is d:
                    self._watch.remove(item)
                    break
            d.errback(ProcessTimeout("%s printed no %s within %g s\n%s" % (
                self.name, what, timeout, self.describe())))

        call = self.clock.callLater(timeout, expired)
        self._watch.append((stream, what, matcher, d, call))
        return d

    def wait_for(self, text, timeout=15, stream="out", start=0):
        """
        Wait until C{text} (or a regular expression, see
        L{wait_for_match}) appears in the process's output.

        @return: a L{Deferred} firing with the whole stream read so far.
        """
        d = self.wait_for_match(text, timeout, stream, start)
        return d.addCallback(lambda _: self.out if stream == "out" else self.err)

    def wait_exit(self, timeout=15):
        """
        Wait for the process to end.

        @return: a L{Deferred} firing with the exit code (C{None} when a
            signal ended it), or failing with L{ProcessTimeout}.
        """
        if self.done:
            return defer.succeed(self.exit_code)
        d = defer.Deferred()

        def expired():
            for item in self._exit_waiters:
                if item[0] is d:
                    self._exit_waiters.remove(item)
                    break
            d.errback(ProcessTimeout("%s did not end within %g s\n%s" % (
                self.name, timeout, self.describe())))

        self._exit_waiters.append((d, self.clock.callLater(timeout, expired)))
        return d

    # -- acting -----------------------------------------------------------

    def write(self, data):
        """
        Send C{data} to the process's stdin.
        """
        self.transport.write(data)

    def close_stdin(self):
        """
        Close the process's stdin (end of input).
        """
        self.transport.closeStdin()

    def kill(self, sig=signal.SIGKILL):
        """
        Send a signal (SIGKILL by default); nothing if it has ended.
        """
        if self.done:
            return
        try:
            self.transport.signalProcess(sig)
        except Exception:
            pass

    @property
    def pid(self):
        """
        The process id, or C{None} once it has ended.
        """
        return getattr(self.transport, "pid", None)

    # -- reporting --------------------------------------------------------

    def status(self):
        """
        How it ended, as text: C{"exit 0"}, C{"signal 9"}, or C{"running"}.
        """
        if not self.done:
            return "running"
        if self.signal is not None:
            return "signal %d" % self.signal
        return "exit %s" % self.exit_code

    def describe(self):
        """
        Its name, state and (the end of) its output, for failure messages.
        """
        return "--- %s (%s) stdout:\n%s\n--- stderr:\n%s\n---" % (
            self.name, self.status(), _tail(self.out), _tail(self.err))


def start(test, argv, name=None, stdin=None, path=ROOT):
    """
    Start the program C{argv} (C{argv[0]} looked up on C{PATH}), the
    checkout first on C{PYTHONPATH}; killed (SIGKILL) at the end of the test
    if it still runs.

    @param test: the running L{twisted.trial.unittest.TestCase}.
    @param argv: the command line.
    @param name: a label for failure messages (by default the command).
    @param stdin: C{bytes} to write to its stdin, which is then closed;
        C{None} leaves stdin open (L{Process.write}, L{Process.close_stdin}).
    @param path: the working directory.
    @return: the L{Process}.
    """
    argv = [str(a) for a in argv]
    executable = shutil.which(argv[0]) or argv[0]
    proc = Process(name or " ".join(argv))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    reactor.spawnProcess(proc, executable, argv, env=env, path=path)
    if stdin is not None:
        proc.write(stdin)
        proc.close_stdin()

    def cleanup():
        if not proc.done:
            proc.kill()
            return proc.wait_exit(10)

    test.addCleanup(cleanup)
    return proc


def spawn(test, *args, stdin=None, module="rserpool.cli", prefix=(), name=None, path=ROOT):
    """
    Start C{python -m MODULE ARGS} (C{python ARGS} with C{module=None}) with
    this interpreter, as L{start} does.

    @param prefix: a command that runs the Python command line, e.g.
        C{("ip", "netns", "exec", "NAME")}.
    @return: the L{Process}.
    """
    python = [sys.executable, "-m", module] if module else [sys.executable]
    if name is None:
        shown = ["python"] + (["-m", module] if module else []) + [str(a) for a in args]
        name = " ".join(list(prefix) + shown)
    return start(test, list(prefix) + python + list(args), name=name, stdin=stdin, path=path)


class Recorder:
    """
    An L{IMessageReceiver} that records what it is told.
    """

    def __init__(self):
        self.events = []

    def connection_made(self, connection):
        self.events.append(("made", connection))

    def message_received(self, connection, message):
        self.events.append(("message", message))

    def protocol_error(self, connection, error):
        self.events.append(("error", error.cause))

    def connection_lost(self, connection):
        self.events.append(("lost", connection))


class Driven:
    """
    A sans-IO machine (L{rserpool.asap.registrar.ASAPRegistrar},
    L{rserpool.enrp.machine.ENRPServer}) driven as its adapter drives it:
    each input method's returned actions are carried out at once by an
    L{rserpool.actions.Runner}, so sends and closes reach the test's fake
    connections, and the rest is recorded; an input method returns the
    actions too.  Any other attribute is the machine's (read and written
    through).

    @ivar scheduled: the times of the L{rserpool.actions.Schedule} actions,
        as C{(machine, when)}.
    @ivar dialled: the server information of the L{rserpool.actions.Dial}
        actions.
    @ivar multicasts: the data of the L{rserpool.actions.Multicast}
        actions.
    """

    #: The machines' input methods.
    EVENTS = frozenset(["connection_made", "connection_lost", "message_received",
                        "protocol_error", "multicast_received", "timer_fired", "start"])

    def __init__(self, machine):
        from rserpool.actions import Runner

        own = self.__dict__
        own["machine"] = machine
        own["scheduled"] = []
        own["dialled"] = []
        own["multicasts"] = []
        own["run"] = Runner(dial=self.dialled.append, multicast=self.multicasts.append)

    def __getattr__(self, name):
        attribute = getattr(self.machine, name)
        if name not in self.EVENTS:
            return attribute

        def event(*args, **kwargs):
            from rserpool.actions import Schedule

            actions = attribute(*args, **kwargs)
            self.scheduled.extend((a.machine, a.when) for a in actions if type(a) is Schedule)
            self.run(actions)
            return actions

        return event

    def __setattr__(self, name, value):
        setattr(self.machine, name, value)


class PESessionPeer:
    """
    A test case mixin: a PE's session layer
    (L{rserpool.transport.enhanced.PESessionFactory}) on a
    L{twisted.internet.testing.StringTransport}, facing a multiplexed peer
    (L{rserpool.transport.mux.MuxConnection}) that reads what it writes.

    @ivar proto: the PE side's protocol.
    @ivar transport: its L{StringTransport}.
    @ivar peer: the peer's L{MuxConnection}: what a test sends the PE goes
        through it (C{self.proto.dataReceived(self.peer.data_to_send())}).
    """

    def connect_pe_session(self, app, clock, **options):
        """
        Build the PE's session protocol around the application protocol
        C{app}, with the clock C{clock} and the factory's C{options}, and
        connect it.
        """
        from twisted.internet.protocol import Factory
        from twisted.internet.testing import StringTransport

        from rserpool.transport import mux
        from rserpool.transport.enhanced import PESessionFactory

        factory = PESessionFactory(Factory.forProtocol(lambda: app), clock, **options)
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.peer = mux.MuxConnection(0, interval=None)

    def frames(self):
        """
        What the PE wrote since the last call, as the peer reads it: data
        frames as C{(ppid, payload)}, and close frames.
        """
        from rserpool.transport import mux

        data = self.transport.value()
        self.transport.clear()
        return [(e.ppid, e.payload) if isinstance(e, mux.DataReceived) else e
                for e in self.peer.receive(data, self.clock.seconds())
                if isinstance(e, (mux.DataReceived, mux.CloseReceived))]


@implementer(IMessageConnection)
class FakeConnection:
    """
    An ENRP (or ASAP) connection that records what a machine sends, decoded
    (pre-encoded bytes are decoded too); verified against
    L{IMessageConnection} in tests/test_helpers.py.

    @ivar sent: the messages sent, in order.
    @ivar closed: whether L{close} was called.
    """

    mapping = "fake"
    identity = None
    role = None
    peer_transport = None

    def __init__(self, protocol="enrp", peer=(LOOPBACK, 1), local=(LOOPBACK, 9901)):
        self.protocol = protocol
        self.sent = []
        self.closed = False
        self.peer = peer
        self.local = local
        self.peer_addresses = (peer[0],)
        self.local_addresses = (local[0],)

    def send(self, message):
        self.sent.append(decode(encode(message), self.protocol))

    def send_encoded(self, data):
        self.sent.append(decode(data, self.protocol))

    def close(self):
        self.closed = True

    def rtt(self):
        raise NotAvailable("rtt", self.mapping)

    def rto(self):
        raise NotAvailable("rto", self.mapping)

    def path_mtu(self):
        raise NotAvailable("path_mtu", self.mapping)

    def of(self, cls):
        """
        The messages of class C{cls} sent so far.
        """
        return [m for m in self.sent if isinstance(m, cls)]


def free_port(address="127.0.0.1"):
    """
    A TCP port of C{address} that was free a moment ago.  Another program
    may take it before it is used: the last resort, for the one case that
    remains, a port a listener must be told before it starts because
    another program is told it first.  Registrars that name each other with
    C{--peer} are that case: the first to start listens on port 0 and the
    others are told its port, but the ports of those started after it must
    be named to it beforehand.

    Every other case has a race-free way:
      - a listener of this process or of a child listens on port 0 and
        says which port it got: its listening port's C{getHost().port}, its
        log line (L{listening_port}), or C{/proc} for a program that says
        nothing (L{bound_udp_port});
      - a port where nothing listens is L{refused_port};
      - a multicast group's port is L{shared_udp_port};
      - a process restarted on the same port is given the port its first
        run, on port 0, got.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((address, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def refused_port(test, address="127.0.0.1"):
    """
    A TCP port of C{address} where nothing listens, for the life of
    C{test}: a socket bound to it without C{listen()}, closed at the end of
    the test.  A connection to it is refused (RST), and no other program
    can listen on it meanwhile, unlike a port that was free a moment ago.

    @return: the port number.
    """
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    test.addCleanup(s.close)
    s.bind((address, 0))
    return s.getsockname()[1]


def shared_udp_port(test):
    """
    A UDP port for a multicast group, held for the life of C{test} by a
    socket bound to it with C{SO_REUSEADDR} (and C{SO_REUSEPORT}), as
    C{listenMulticast(port, ..., listenMultiple=True)} binds: every
    multicast listener that allows sharing binds it too, and no program
    that wants the port to itself can take it meanwhile.  The holding
    socket joins no group; what it receives nobody reads.

    @return: the port number.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    test.addCleanup(s.close)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("", 0))
    # A small buffer: the datagrams it holds are never read.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    return s.getsockname()[1]


def bound_udp_port(pid, address="127.0.0.1"):
    """
    The UDP port that the process C{pid} has bound on the IPv4 address
    C{address}, read from Linux's C{/proc}: for a program that binds port 0
    when told to but does not say which port it took (RSPLIB's
    C{cspmonitor}).

    @return: the port, or C{None} while it has bound none (poll it with
        L{eventually}).
    """
    sockets = set()
    fds = "/proc/%d/fd" % pid
    for fd in os.listdir(fds):
        try:
            target = os.readlink(os.path.join(fds, fd))
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            sockets.add(target[len("socket:["):-1])
    # /proc/net/udp: "sl local_address rem_address st ... inode", the
    # address as the hex of the 32-bit number in host byte order, the port
    # in hex.
    host = "%08X" % struct.unpack("=I", socket.inet_aton(address))[0]
    with open("/proc/net/udp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            local, inode = fields[1], fields[9]
            if inode in sockets and local.split(":")[0] == host:
                return int(local.split(":")[1], 16)
    return None


def listening_port(process, what, address="127.0.0.1", timeout=20, stream="out"):
    """
    The port a child process listens on, from its log line C{WHAT listening
    on ENDPOINT (ADDRESS:PORT)} (a registrar's C{ASAP}, C{ENRP} and
    C{HTTP} listeners, a PE's C{HTTP} listener): how a test learns the
    port of a listener it started on port 0.

    @param process: a L{Process}.
    @param what: the listener's name in the line (C{"ASAP"}, C{"ENRP"},
        C{"HTTP"}).
    @param address: the address it listens on.
    @param stream: where the process logs, C{"out"} or C{"err"}.
    @return: a L{Deferred} firing with the port (an C{int}), or failing as
        L{Process.wait_for_match} does.
    """
    line = re.compile(re.escape(what.encode()) + rb" listening on \S+ \("
                      + re.escape(address.encode()) + rb":(\d+)\)")
    d = process.wait_for_match(line, timeout=timeout, stream=stream)
    return d.addCallback(lambda match: int(match.group(1)))


def write_keys(test, text, mode=0o600):
    """
    Write a key file (C{text}, with the file mode C{mode}) in the
    test's temporary directory.

    @return: its path.
    """
    path = test.mktemp()
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def running(test, service):
    """
    Start C{service} for C{test}; at its end the service is stopped if it
    still runs.

    @return: C{service}.
    """
    service.startService()
    test.addCleanup(lambda: service.running and service.stopService())
    return service


@defer.inlineCallbacks
def loopback_registrar(test):
    """
    A registrar (L{rserpool.services.RegistrarService}, default
    configuration) listening for ASAP over TCP on a free port of
    127.0.0.1, stopped at the end of C{test}.

    @return: a L{Deferred} that fires, once it listens, with C{(the
        service, its client endpoint string)}.
    """
    from rserpool.services import RegistrarService, make_config

    registrar = RegistrarService(make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"])
    registrar.startService()
    test.addCleanup(registrar.stopService)
    ports = yield registrar.ready
    return registrar, "tcp:127.0.0.1:%d" % ports[0].getHost().port


@defer.inlineCallbacks
def tap_registrar(test, argv):
    """
    The registrar C{twistd enrp ARGV} would run (L{rserpool.tap.makeService}),
    started and stopped at the end of C{test}.

    @return: a L{Deferred} that fires with the service once it is ready.
    """
    from rserpool import tap

    options = tap.Options()
    options.parseOptions(argv)
    service = tap.makeService(options)
    service.startService()
    test.addCleanup(service.stopService)
    yield service.ready
    return service
