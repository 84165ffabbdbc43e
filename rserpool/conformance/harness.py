"""
The registrar side of the pool element tests: minimal registrars the PE
under test registers with, and the PE itself, started as a process from
the command line the target gives (C{RSERPOOL_TARGET_PE}).

A L{HarnessRegistrar} listens on an ASAP endpoint (TCP, or SCTP with
C{RSERPOOL_TARGET_PE_MAPPING=sctp}), accepts every Registration and
Deregistration with a Response, and keeps every message in one L{Inbox};
tests send Endpoint Keep Alives and close it to make the PE fail over.
L{PEProcess} starts the command with its placeholders filled in and stops
it with SIGTERM (then SIGKILL), every wait bounded.
"""
import ipaddress
import os
import shlex

from twisted.internet import defer, protocol
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory

from rserpool.codes import ErrorCause
from rserpool.conformance.client import Inbox, WireConnection, connect
from rserpool.wire import (
    ASAP,
    Deregistration,
    DeregistrationResponse,
    HandleResolution,
    HandleResolutionResponse,
    OperationError,
    Registration,
    RegistrationResponse,
)

__all__ = ["HarnessRegistrar", "PEProcess", "fill"]


class _Accepting(Factory):
    noisy = False

    def __init__(self, registrar):
        self.registrar = registrar

    def buildProtocol(self, addr):
        r = self.registrar
        wire = WireConnection(r.reactor, ASAP, "%s (PE connection)" % r.name, r.inbox)
        wire.on_message = r._answer
        r.connections.append(wire)
        return wire.build(addr)


class HarnessRegistrar:
    """
    A registrar for the PE under test to register with.

    @ivar server_id: its id (in the Endpoint Keep Alives it sends).
    @ivar registrations: C{(time, connection, Registration)}, in order.
    @ivar resolutions: C{(time, connection, HandleResolution)}, in order.
    @ivar resolver: called with a pool handle and the number of Handle
        Resolutions so far (from 1), returns the Pool Elements to answer
        with (none: Unknown Pool Handle); C{None} answers every one so.
    @ivar endpoint: a client endpoint string that reaches it.
    @ivar hostport: C{"ADDRESS:PORT"} (for commands that want that form).
    """

    def __init__(self, reactor, server_id, mapping="tcp", bind="127.0.0.1", name="registrar"):
        self.reactor = reactor
        self.server_id = server_id
        self.mapping = mapping
        self.bind = bind
        self.name = name
        self.inbox = Inbox(reactor, name)
        self.connections = []
        self.registrations = []
        self.deregistrations = []
        self.resolutions = []
        self.resolver = None
        self.endpoint = None
        self.hostport = None
        self._port = None

    @defer.inlineCallbacks
    def start(self):
        """
        Listen on a free port of C{bind}.
        """
        host = self.bind
        if self.mapping == "sctp":
            listen = "sctp:0:interface=%s:mode=seqpacket:ppid=11" % host
        else:
            listen = "tcp:0:interface=%s" % host.replace(":", "\\:")
        self._port = yield serverFromString(self.reactor, listen).listen(_Accepting(self))
        port = self._port.getHost().port
        shown = "[%s]" % host if ipaddress.ip_address(host).version == 6 else host
        self.hostport = "%s:%d" % (shown, port)
        self.endpoint = "%s:host=%s:port=%d" % (self.mapping, host.replace(":", "\\:"), port)
        return self

    @defer.inlineCallbacks
    def reach(self, description, timeout):
        """
        Open a connection of this registrar's own to a PE (a registrar that
        took the PE over reaches it at its ASAP transport, RFC 5353
        section 3.5.2); what comes over it is answered and kept as over
        the connections the PE opened.

        @param description: a client endpoint string of the PE's ASAP
            transport.
        @return: a L{Deferred} firing with the L{WireConnection}.
        """
        wire = yield connect(self.reactor, description, ASAP, bind=self.bind, timeout=timeout,
                             name="%s (to the PE)" % self.name, inbox=self.inbox)
        wire.on_message = self._answer
        self.connections.append(wire)
        return wire

    @defer.inlineCallbacks
    def stop(self):
        """
        Fail: stop listening and close every connection.
        """
        if self._port is not None:
            port, self._port = self._port, None
            yield port.stopListening()
        for wire in list(self.connections):
            yield wire.close()

    def _answer(self, wire, message):
        # A registrar accepts (RFC 5352 section 3.1) and says so.
        if isinstance(message, Registration):
            self.registrations.append((self.reactor.seconds(), wire, message))
            wire.send(RegistrationResponse(message.pool_handle, message.pool_element.identifier))
        elif isinstance(message, Deregistration):
            self.deregistrations.append((self.reactor.seconds(), wire, message))
            wire.send(DeregistrationResponse(message.pool_handle, message.identifier))
        elif isinstance(message, HandleResolution):
            # RFC 5352 section 3.3: the PEs the test chose, or none.
            self.resolutions.append((self.reactor.seconds(), wire, message))
            pes = ()
            if self.resolver is not None:
                pes = tuple(self.resolver(message.pool_handle, len(self.resolutions)))
            if pes:
                wire.send(HandleResolutionResponse(message.pool_handle, pes[0].policy, pes))
            else:
                wire.send(HandleResolutionResponse(
                    message.pool_handle,
                    error=OperationError.of(ErrorCause.UNKNOWN_POOL_HANDLE)))


def fill(template, handle, registrars):
    """
    The PE's command line: C{template} with C{{handle}}, C{{registrar}},
    C{{registrar_hostport}}, C{{registrar2}} and C{{registrar2_hostport}}
    filled in.

    @return: the argument list.
    """
    values = {"handle": handle.decode("ascii")}
    for i, r in enumerate(registrars):
        suffix = "" if i == 0 else str(i + 1)
        values["registrar" + suffix] = r.endpoint
        values["registrar%s_hostport" % suffix] = r.hostport
    return [part.format(**values) for part in shlex.split(template)]


class PEProcess(protocol.ProcessProtocol):
    """
    The PE under test, as a child process.
    """

    def __init__(self, reactor, argv, name="PE"):
        self.reactor = reactor
        self.argv = argv
        self.name = name
        self.output = b""
        self.ended = defer.Deferred()
        self.done = False

    def start(self):
        import shutil

        executable = shutil.which(self.argv[0]) or self.argv[0]
        self.reactor.spawnProcess(self, executable, self.argv, env=dict(os.environ))
        return self

    def outReceived(self, data):
        self.output = (self.output + data)[-4000:]

    errReceived = outReceived

    def processEnded(self, reason):
        self.done = True
        self.ended.callback(None)

    def describe(self):
        """
        The command and the end of what it printed, for failure messages.
        """
        return "\n--- %s (%s)%s:\n%s" % (
            self.name, " ".join(self.argv), " ended" if self.done else "",
            self.output.decode("utf-8", "replace"))

    def signal(self, name):
        if not self.done:
            try:
                self.transport.signalProcess(name)
            except Exception:
                pass

    @defer.inlineCallbacks
    def stop(self, grace=5.0):
        """
        SIGTERM, then SIGKILL after C{grace} seconds; at most a few more
        seconds for it to end.
        """
        if self.done:
            return
        self.signal("TERM")
        yield self.wait(grace)
        if not self.done:
            self.signal("KILL")
            yield self.wait(5.0)

    def wait(self, seconds):
        """
        A L{Deferred} that fires when the process ends or C{seconds} pass.
        """
        if self.done:
            return defer.succeed(None)
        d = defer.Deferred()
        call = self.reactor.callLater(seconds, lambda: d.called or d.callback(None))

        def ended(result):
            if call.active():
                call.cancel()
            if not d.called:
                d.callback(None)
            return result

        self.ended.addBoth(ended)
        return d

