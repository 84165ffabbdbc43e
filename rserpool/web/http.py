"""
The HTTP listener, hardened: whatever a client does, it holds a bounded
share of the process and never stalls the reactor (issue #16).

 - A request (line, headers and body) must arrive whole within
   C{request_timeout} seconds of its first byte, or of the connection: a
   client sending one byte a second is closed after that, whatever it
   sends.  A connection idle between requests is closed after
   C{idle_timeout} seconds (Twisted's own timeout, which also aborts a
   client that does not read its answer).
 - The request line and headers together are at most C{max_header_bytes}
   bytes and C{max_headers} headers; a body at most C{max_body} bytes (the
   resources here take none): beyond, 400 or 413 and the connection closes.
 - At most C{max_connections} connections at once, C{per_source} of them
   from one address; beyond, a new connection is closed at once.
 - At most C{rate} requests a second are answered (C{burst} at once); the
   others wait their turn, in order of arrival, without being read further,
   and one that would wait longer than C{request_timeout} is answered 503.
   So however many clients scrape at once, the registrar spends a bounded
   share of its time on HTTP: 200 scrapers in a closed loop get 200
   answers a second, not 8,000 (``bench/bench_http.py``), and ASAP does not
   notice.
 - A streamed answer (server-sent events) that the client does not read is
   dropped once C{max_buffered} bytes wait for it or it has read nothing for
   C{stall_timeout} seconds (L{StreamGuard}).

Everything is answered in the reactor thread from state kept in memory: no
request waits for anything but its own bytes.
"""
import io

import attrs

from rserpool.limits import TokenBucket
from rserpool.transport.hosts import where
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site
from zope.interface import implementer

__all__ = ["HTTPLimits", "GuardedSite", "GuardedChannel", "GuardedRequest", "StreamGuard",
           "listen_http"]


@attrs.frozen
class HTTPLimits:
    """
    What one HTTP client may hold (see the module's description).
    """

    request_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_header_bytes: int = 8192
    max_headers: int = 64
    max_line: int = 4096
    max_body: int = 4096
    max_connections: int = 256
    per_source: int = 32
    stall_timeout: float = 30.0
    max_buffered: int = 1 << 20
    rate: float = 200.0
    burst: int = 20


class GuardedRequest(Request):
    """
    A request whose body is bounded (and kept in memory, never in a
    temporary file).
    """

    _body = 0

    def gotLength(self, length):
        limit = self.channel.limits.max_body
        if length is not None and length > limit:
            self.content = io.BytesIO()
            self.channel.refuse(413, b"Payload Too Large")
            return
        self.content = io.BytesIO()

    def handleContentChunk(self, data):
        self._body += len(data)
        if self.channel.limits.max_body is not None and self._body > self.channel.limits.max_body:
            self.channel.refuse(413, b"Payload Too Large")
            return
        self.content.write(data)

    def process(self):
        # Its turn (GuardedSite.admit): now, later, or never.
        site = self.channel.site if self.channel is not None else None
        wait = site.admit() if site is not None else 0.0
        if wait is None:
            self.setResponseCode(503)
            self.setHeader(b"retry-after", b"1")
            self.setHeader(b"content-type", b"text/plain")
            self.write(b"busy\n")
            self.finish()
        elif wait > 0:
            site.reactor.callLater(wait, self._process_now)
        else:
            Request.process(self)

    def _process_now(self):
        if self.channel is not None and not self._disconnected:
            Request.process(self)


#: The listener's log (a L{Site} has a method C{log}: the access log).
_log = Logger()


class GuardedChannel(HTTPChannel):
    """
    An HTTP connection with a deadline per request and bounded headers.
    """

    log = Logger()
    limits = HTTPLimits()
    _deadline = None
    _refused = False
    _source = None

    def connectionMade(self):
        limits = self.limits
        self.totalHeadersSize = limits.max_header_bytes
        self.maxHeaders = limits.max_headers
        self.MAX_LENGTH = limits.max_line
        HTTPChannel.connectionMade(self)
        # A connection that never sends a whole request is closed too.
        self._arm()

    def _arm(self):
        self._disarm()
        if self.limits.request_timeout:
            self._deadline = self.callLater(self.limits.request_timeout, self._too_slow)

    def _disarm(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self):
        self._deadline = None
        if self._handlingRequest:
            return
        self._refused = True
        self.transport.abortConnection()

    def dataReceived(self, data):
        if self._refused:
            return
        if self._deadline is None and not self._handlingRequest:
            # The first byte of the next request on a kept-alive connection.
            self._arm()
        HTTPChannel.dataReceived(self, data)

    def allContentReceived(self):
        self._disarm()
        HTTPChannel.allContentReceived(self)

    def refuse(self, code, message):
        """
        Answer C{code} at once and close: the request broke a limit.
        """
        if self._refused:
            return
        self._refused = True
        self._disarm()
        self.transport.write(b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                             % (code, message))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self._disarm()
        HTTPChannel.connectionLost(self, reason)
        factory = getattr(self, "site", None) or getattr(self, "factory", None)
        if self._source is not None and factory is not None:
            factory.release(self._source)
            self._source = None


class GuardedSite(Site):
    """
    A L{Site} of L{GuardedChannel}s that counts its connections per source
    and in all.

    @ivar open: connections open.
    @ivar refused: connections refused by the budget since the start.
    """

    protocol = GuardedChannel
    requestFactory = GuardedRequest
    noisy = False

    def __init__(self, resource, limits=None, reactor=None):
        """
        @param resource: the root resource.
        @param limits: the L{HTTPLimits}.
        @param reactor: the C{IReactorTime} (deadlines) and reactor.
        """
        limits = limits if limits is not None else HTTPLimits()
        Site.__init__(self, resource, timeout=limits.idle_timeout, reactor=reactor)
        self.limits = limits
        self.open = 0
        self.refused = 0
        self.delayed = 0
        self.busy = 0
        self._sources = {}
        self._bucket = TokenBucket(limits.rate, limits.burst, self.reactor.seconds()) \
            if limits.rate else None
        self._next = 0.0

    def admit(self):
        """
        A request's turn: C{0} to answer it now, the seconds it waits
        (C{rate} a second after the C{burst}, in order of arrival), or
        C{None} when it would wait longer than C{request_timeout}.
        """
        bucket = self._bucket
        if bucket is None:
            return 0.0
        now = self.reactor.seconds()
        if self._next <= now and bucket.take(now):
            return 0.0
        # The next token, or the turn after those already waiting.
        slot = max(self._next, now + max(0.0, 1.0 - bucket.tokens) / bucket.rate)
        wait = slot - now
        if self.limits.request_timeout and wait > self.limits.request_timeout:
            self.busy += 1
            return None
        self._next = slot + 1.0 / bucket.rate
        self.delayed += 1
        return wait

    def log(self, request):
        # No access log: a scrape every few seconds is not news.
        pass

    def buildProtocol(self, addr):
        key = getattr(addr, "host", None)
        limits = self.limits
        if self.open >= limits.max_connections or (
                limits.per_source and self._sources.get(key, 0) >= limits.per_source):
            self.refused += 1
            return None
        protocol = Site.buildProtocol(self, addr)
        protocol.limits = limits
        protocol._source = key
        self.open += 1
        self._sources[key] = self._sources.get(key, 0) + 1
        return protocol

    def release(self, key):
        """
        A connection of C{key} is gone.
        """
        self.open -= 1
        count = self._sources.get(key, 0) - 1
        if count > 0:
            self._sources[key] = count
        else:
            self._sources.pop(key, None)


@implementer(IPushProducer)
class StreamGuard:
    """
    Watches a streamed response: registered as the request's producer, it
    learns when the client stops reading; what is written meanwhile is
    counted, and past C{max_buffered} bytes or C{stall_timeout} seconds
    the connection is aborted.
    """

    def __init__(self, request, limits, clock, on_close=None):
        self.request = request
        self.limits = limits
        self.clock = clock
        self.on_close = on_close
        self.paused_at = None
        self.queued = 0
        self.closed = False
        self._call = None
        request.registerProducer(self, True)

    def write(self, data):
        """
        Write C{data} to the client unless it is gone or stalled too long.

        @return: whether the stream goes on.
        """
        if self.closed:
            return False
        if self.paused_at is not None:
            self.queued += len(data)
            if self.queued > self.limits.max_buffered:
                self.abort()
                return False
        self.request.write(data)
        return True

    def pauseProducing(self):
        if self.paused_at is None and not self.closed:
            self.paused_at = self.clock.seconds()
            self.queued = 0
            self._call = self.clock.callLater(self.limits.stall_timeout, self.abort)

    def resumeProducing(self):
        self.paused_at = None
        self.queued = 0
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def stopProducing(self):
        self.stop()

    def stop(self):
        """
        The stream ends (the client went away, or we end it).
        """
        if self.closed:
            return
        self.closed = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.on_close is not None:
            self.on_close(self)

    def abort(self):
        """
        Drop a client that does not read.
        """
        self._call = None
        if self.closed:
            return
        transport = getattr(self.request.channel, "transport", None)
        self.stop()
        if transport is not None:
            transport.abortConnection()


def listen_http(reactor, description, resource, limits=None):
    """
    Serve C{resource} on a server endpoint string (C{tcp:8080},
    C{ssl:...}, C{psk:...}).

    @return: a L{Deferred} firing with C{(port, site)}.
    @raise ValueError: the endpoint string does not parse.
    """
    endpoint = serverFromString(reactor, description)
    site = GuardedSite(resource, limits, reactor)

    def listening(port):
        # As the registrar's ASAP and ENRP listeners say where they listen:
        # on port 0, the log is how an operator (or a test) learns the port.
        _log.info("HTTP listening on {endpoint} ({where})", endpoint=description,
                  where=where(port.getHost()))
        return port, site

    return endpoint.listen(site).addCallback(listening)
