"""
A resumable file transfer that fails over mid-stream: the services
draft's example (draft-ietf-rserpool-service section 4.5.2), in Enhanced
Mode.

Messages (one per session message)::

    PU -> PE  GET <name> <offset>      start sending <name> from <offset>
    PU -> PE  RESUME <offset>          after a failover: go on from <offset>
    PE -> PU  D <offset:8> <total:8> <bytes>   a chunk (binary header)
    PE -> PU  ERR <text>               refusal; the PE then ends the session

The PE answers a GET with SET_COOKIE first: the cookie names the file and
is signed with a key the pool shares (HMAC-SHA256), so a new PE can trust
it.  When the PU fails over, the session layer sends the cookie (Cookie
Echo) to the new PE before anything else (COOKIE_INDICATION there), then
the PU's failover callback sends C{RESUME} with the first byte it has not
received: the transfer completes byte-exact however many PEs fail.

Files are read from a directory (C{root}); the name C{pattern-<size>}
stands for <size> deterministic bytes (L{pattern}), so that PEs in
different processes serve the same content without files.
"""
import hashlib
import hmac
import os
import struct

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

__all__ = [
    "TransferServer",
    "TransferServerFactory",
    "TransferClient",
    "TransferClientFactory",
    "server_factory",
    "pattern",
    "DEFAULT_KEY",
]

_CHUNK = struct.Struct("!QQ")

#: The cookie key PEs of a pool share unless told otherwise.  Set your own.
DEFAULT_KEY = b"rserpool-example-transfer"


def pattern(size, offset=0, length=None):
    """
    Bytes C{offset} to C{offset + length} of the deterministic
    C{pattern-<size>} file.
    """
    if length is None:
        length = size - offset
    end = min(size, offset + length)
    return bytes(((i * 31) + (i >> 8)) & 0xFF for i in range(offset, end))


def _sign(key, body):
    return hmac.new(key, body, hashlib.sha256).digest()


def make_cookie(key, name):
    """
    The state cookie for a transfer of C{name}.
    """
    body = b"T1" + name
    return _sign(key, body) + body


def open_cookie(key, cookie):
    """
    The file name in a cookie, or C{None} if it is not genuine.
    """
    mac, body = cookie[:32], cookie[32:]
    if len(cookie) < 34 or not hmac.compare_digest(mac, _sign(key, body)) or body[:2] != b"T1":
        return None
    return body[2:]


class _Source:
    def __init__(self, root, name):
        self.name = name
        text = name.decode("utf-8", "replace")
        if text.startswith("pattern-") and text[8:].isdigit():
            self.size = int(text[8:])
            self.path = None
            return
        if root is None or "/" in text or "\\" in text or text in ("", ".", ".."):
            raise LookupError("no such file: %s" % text)
        self.path = os.path.join(root, text)
        if not os.path.isfile(self.path):
            raise LookupError("no such file: %s" % text)
        self.size = os.path.getsize(self.path)

    def read(self, offset, length):
        if self.path is None:
            return pattern(self.size, offset, length)
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)


class TransferServer(Protocol):
    """
    The PE side: sends chunks of a file; resumes from a cookie.

    @ivar resumed_from_cookie: the file name learned from a Cookie Echo.
    """

    log = Logger()
    source = None
    offset = 0
    resumed_from_cookie = None
    _call = None

    def cookieReceived(self, cookie):
        # COOKIE_INDICATION: a PU failed over to us; the cookie comes
        # before its first message.
        name = open_cookie(self.factory.key, cookie)
        if name is None:
            self.log.warn("transfer: forged or foreign cookie; refusing")
            self.transport.write(b"ERR bad cookie")
            self.transport.loseConnection()
            return
        self.resumed_from_cookie = name
        try:
            self.source = _Source(self.factory.root, name)
        except LookupError as e:
            self.transport.write(b"ERR " + str(e).encode())
            self.transport.loseConnection()

    def dataReceived(self, data):
        words = data.split(b" ")
        try:
            if words[0] == b"GET" and len(words) == 3:
                self.source = _Source(self.factory.root, words[1])
                set_cookie = getattr(self.transport, "set_cookie", None)
                if set_cookie is not None:
                    set_cookie(make_cookie(self.factory.key, words[1]))
                self._start(int(words[2]))
            elif words[0] == b"RESUME" and len(words) == 2 and self.source is not None:
                self._start(int(words[1]))
            else:
                raise LookupError("bad request")
        except (LookupError, ValueError) as e:
            self.transport.write(b"ERR " + str(e).encode())
            self.transport.loseConnection()

    def _start(self, offset):
        if not 0 <= offset <= self.source.size:
            raise ValueError("offset out of range")
        self.offset = offset
        if self._call is None:
            self._send()

    def _send(self):
        self._call = None
        factory = self.factory
        source = self.source
        for _ in range(factory.burst):
            if self.offset >= source.size:
                return
            data = source.read(self.offset, factory.chunk_size)
            self.transport.write(b"D" + _CHUNK.pack(self.offset, source.size) + data)
            self.offset += len(data)
        if self.offset < source.size:
            self._call = factory.clock.callLater(factory.chunk_delay, self._send)

    def connectionLost(self, reason):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class TransferServerFactory(Factory):
    """
    @ivar root: the directory served, or C{None} (only C{pattern-N}).
    @ivar key: the pool's cookie key.
    @ivar chunk_size: bytes per chunk.
    @ivar chunk_delay: seconds between bursts of chunks.
    @ivar burst: chunks per burst.
    """

    protocol = TransferServer

    def __init__(self, root=None, key=DEFAULT_KEY, chunk_size=4096, chunk_delay=0.0,
                 burst=4, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.root = root
        self.key = key
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay
        self.burst = burst
        self.clock = clock


def server_factory(root=None, key=DEFAULT_KEY, chunk_size=4096, chunk_delay=0.0, clock=None,
                   **options):
    """
    The transfer service's factory.
    """
    return TransferServerFactory(root, key, chunk_size, chunk_delay, clock=clock)


class TransferClient(Protocol):
    """
    The PU side: asks for a file and keeps the lowest byte not yet
    received; its failover callback (L{sessionFailover}) asks the new PE
    to resume from there.

    @ivar received: the bytes so far.
    @ivar failovers: failovers seen.
    """

    def __init__(self, name, done):
        self.name = name
        self.done = done
        self.received = bytearray()
        self.total = None
        self.failovers = 0

    def connectionMade(self):
        self.transport.write(b"GET " + self.name + b" 0")

    def sessionFailover(self, pe):
        # Services draft 4.5.2: "reissues the request to the new server,
        # replacing the offset with this number".
        self.failovers += 1
        if self.received:
            self.transport.write(b"RESUME %d" % len(self.received))
        else:
            self.transport.write(b"GET " + self.name + b" 0")

    def dataReceived(self, data):
        if data.startswith(b"ERR"):
            if not self.done.called:
                self.done.errback(RuntimeError(data.decode("utf-8", "replace")))
            self.transport.loseConnection()
            return
        if not data.startswith(b"D"):
            return
        offset, total = _CHUNK.unpack_from(data, 1)
        chunk = data[1 + _CHUNK.size:]
        self.total = total
        have = len(self.received)
        if offset > have:
            return  # a gap cannot happen on one ordered connection
        self.received += chunk[have - offset:]
        if len(self.received) >= total and not self.done.called:
            self.transport.loseConnection()
            self.done.callback(bytes(self.received[:total]))

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.errback(reason)


class TransferClientFactory(Factory):
    """
    Builds one L{TransferClient}; C{done} fires with the file's bytes.
    """

    def __init__(self, name):
        self.name = name.encode("utf-8") if isinstance(name, str) else name
        self.done = defer.Deferred()
        self.client = None

    def buildProtocol(self, addr):
        self.client = TransferClient(self.name, self.done)
        self.client.factory = self
        return self.client


def fetch(endpoint, name):
    """
    Fetch C{name} through a client endpoint (an Enhanced Mode
    L{rserpool.pu.PoolClientEndpoint}).

    @return: a L{Deferred} firing with the file's bytes.
    """
    factory = TransferClientFactory(name)
    d = endpoint.connect(factory)
    d.addCallback(lambda _: factory.done)
    return d
