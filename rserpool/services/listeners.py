"""
A registrar's listeners: one service that listens on every ASAP and ENRP
endpoint (and whatever else must listen before the registrar counts as
up, such as its HTTP side) and tells when all of them do.

The other services of a registrar (L{rserpool.services}) start their work
from L{ListenerService.ready}: Server Announce names the ports that
listen, ENRP peers are dialled from the ENRP listener's address, and so
on.
"""
from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.transport.hosts import strerror, where
from rserpool.transport.guard import limit_accepts, with_backlog
from rserpool.transport.psk import PSKServerEndpoint

__all__ = ["ListenFailed", "ListenerService", "AfterListening"]


class ListenFailed(Exception):
    """
    An endpoint could not listen (port in use, bad address, no permission).
    Its message is one line naming the endpoint and the cause.
    """


class ListenerService(service.Service):
    """
    Listens on endpoints, each with its factory, and fires L{ready} once
    all of them listen.

    @ivar ports: every listening port, once started.
    @ivar ports_of: C{{what: [port, ...]}} (C{"ASAP"}, C{"ENRP"}).
    @ivar ready: a L{Deferred} (from L{startService} on) that fires with
        the list of ports once every endpoint listens, or fails with
        L{ListenFailed} (every port that did listen is closed again).
    @ivar psk_creators: the TLS-PSK context creators of the listeners,
        whose keys can be reloaded.
    """

    log = Logger()

    def __init__(self, reactor, psk=None, exit_on_listen_failure=False):
        """
        @param reactor: the reactor.
        @param psk: a L{rserpool.transport.psk.PSKEndpoints} that turns
            every endpoint into a TLS-PSK one (with the registrars' keys
            for ENRP), or C{None}.
        @param exit_on_listen_failure: raise C{SystemExit} with a one-line
            message if an endpoint cannot listen at once, and stop the
            reactor if one fails later (for C{twistd}, which would
            otherwise print a traceback).
        """
        self.reactor = reactor
        self.psk = psk
        self.exit_on_listen_failure = exit_on_listen_failure
        self._endpoints = []
        self._also = []
        self._hooks = []
        self.ports = []
        self.ports_of = {}
        self.ready = None
        self.psk_creators = []

    def add(self, description, factory, what):
        """
        Listen on an endpoint when the service starts.

        @param description: a server endpoint string.
        @param factory: its protocol factory.
        @param what: what listens there, for logs and L{ports_of}.
        """
        self._endpoints.append((description, factory, what))
        self.ports_of.setdefault(what, [])

    def also(self, start):
        """
        Start something else that must be up before L{ready} fires.

        @param start: called without arguments when the service starts; it
            returns a L{Deferred} that fails with L{ListenFailed} if it
            cannot start.
        """
        self._also.append(start)

    def hook(self, callback, errback):
        """
        Have L{ready}, each time the service starts, call C{callback(ports)}
        or C{errback(failure)} before anything else hears of it (the
        registrar's own report); each returns what it was given.
        """
        self._hooks.append((callback, errback))

    def startService(self):
        service.Service.startService(self)
        listens = [self._listen(*endpoint) for endpoint in self._endpoints]
        others = [start() for start in self._also]
        d = defer.gatherResults(listens + others, consumeErrors=True)
        d.addCallback(lambda results: results[:len(listens)])
        d.addErrback(self._failed)
        for callback, errback in self._hooks:
            d.addCallbacks(callback, errback)
        self.ready = d
        # An endpoint such as TCP listens at once: report a failure now, as
        # one line, instead of a traceback from twistd.
        if self.exit_on_listen_failure and isinstance(getattr(d, "result", None), Failure):
            failure = d.result
            d.addErrback(lambda f: None)
            raise SystemExit("enrp: " + failure.getErrorMessage())

    def _listen(self, description, factory, what):
        try:
            if self.psk is not None:
                description = self.psk.server(description, peer=(what == "ENRP"))
            endpoint = serverFromString(self.reactor, with_backlog(description))
        except (ValueError, KeyError, TypeError) as e:
            return defer.fail(ListenFailed("bad {} endpoint {!r}: {}".format(what, description, e)))
        if isinstance(endpoint, PSKServerEndpoint):
            self.psk_creators.append(endpoint.creator)

        def listening(port):
            limit_accepts(port)
            self.ports.append(port)
            self.ports_of[what].append(port)
            self.log.info("{what} listening on {endpoint} ({where})", what=what,
                          endpoint=description, where=where(port.getHost()))
            return port

        def failed(f):
            f.trap(CannotListenError, OSError)
            reason = f.value
            if isinstance(reason, CannotListenError):
                reason = reason.socketError
            raise ListenFailed(
                "cannot listen for {} on {!r}: {}".format(what, description, strerror(reason)))

        return endpoint.listen(factory).addCallbacks(listening, failed)

    def _failed(self, failure):
        if isinstance(failure.value, defer.FirstError):
            failure = failure.value.subFailure
        failure.trap(ListenFailed)
        self.log.critical("{message}", message=failure.getErrorMessage())
        self._close()
        if self.exit_on_listen_failure and self.reactor.running:
            self.reactor.stop()
        return failure

    def _close(self):
        stops = [defer.maybeDeferred(port.stopListening) for port in self.ports]
        self.ports = []
        for ports in self.ports_of.values():
            del ports[:]
        return defer.gatherResults(stops)

    def stopService(self):
        service.Service.stopService(self)
        return self._close()


class AfterListening(service.Service):
    """
    A service whose work begins once the registrar's listeners listen
    (L{ListenerService.ready}): what it does needs their ports.  It must be
    added to the parent after the L{ListenerService}.

    @ivar listeners: the L{ListenerService}.
    """

    def __init__(self, listeners):
        self.listeners = listeners

    def startService(self):
        service.Service.startService(self)
        self.listeners.ready.addCallback(self._listening)

    def _listening(self, ports):
        if self.running:
            self.begin()
        return ports

    def begin(self):
        """
        Every listener listens: start working (subclasses say how).
        """
        raise NotImplementedError(self.begin)
