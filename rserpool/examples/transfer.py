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
is sealed (L{rserpool.session.sealing.CookieSealer}: encrypted and
authenticated with a key the pool shares, bound to the pool handle, with an
expiry), so a new PE can trust it.  When the PU fails over, the session
layer sends the cookie (Cookie Echo) to the new PE before anything else
(COOKIE_INDICATION there), then the PU's failover callback sends C{RESUME}
with the first byte it has not received: the transfer completes byte-exact
however many PEs fail.  A cookie that does not open (forged, altered,
expired, of another pool) is answered with C{ERR bad cookie} and the end of
the session; why goes to the PE's log only.  A PE sets a fresh cookie when
it resumes a transfer and again whenever half the cookie's lifetime has
passed, so that a long transfer never leaves its PU with an expired one.

The pool's keys: a key file (C{cookie_keys}, C{rserpool pe --cookie-keys
FILE}; see L{rserpool.session.sealing.Keyring.parse}), read again when it
changes, so that keys can be rotated while transfers run.  Without one, the
key is derived from a passphrase (C{key}, C{--key}), by default the public
L{DEFAULT_KEY}: anyone can then make cookies, which is good for
demonstrations only.

Replaying a cookie (to any PE of the pool, until it expires) gets nothing
the PU could not ask for with C{GET}: the cookie holds the file's name,
which the PU chose.

Files are read from a directory (C{root}); the name C{pattern-<size>}
stands for <size> deterministic bytes (L{pattern}), so that PEs in
different processes serve the same content without files.
"""
import hashlib
import os
import struct
import time

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from rserpool.session.sealing import (
    DEFAULT_LIFETIME,
    CookieRejected,
    CookieSealer,
    MALFORMED,
    KeyFileError,
    Keyring,
)

__all__ = [
    "TransferServer",
    "TransferServerFactory",
    "TransferClient",
    "TransferClientFactory",
    "server_factory",
    "pattern",
    "passphrase_keyring",
    "DEFAULT_HANDLE",
    "DEFAULT_KEY",
]

_CHUNK = struct.Struct("!QQ")

#: The cookie passphrase PEs of a pool share unless told otherwise: public,
#: so anyone can make cookies.  Give the PEs a key file instead.
DEFAULT_KEY = b"rserpool-example-transfer"
#: The pool handle cookies are bound to unless told otherwise.
DEFAULT_HANDLE = b"TransferPool"
#: Seconds between looks at the key file for changes.
KEY_CHECK_INTERVAL = 1.0

_STATE = b"T1"


def pattern(size, offset=0, length=None):
    """
    Bytes C{offset} to C{offset + length} of the deterministic
    C{pattern-<size>} file.
    """
    if length is None:
        length = size - offset
    end = min(size, offset + length)
    return bytes(((i * 31) + (i >> 8)) & 0xFF for i in range(offset, end))


def passphrase_keyring(passphrase):
    """
    A keyring of one key derived from C{passphrase} (key id C{pass}): as
    strong as the passphrase, no more.
    """
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    key = hashlib.sha256(b"rserpool transfer cookie key\x00" + passphrase).digest()
    return Keyring([(b"pass", key)])


def make_cookie(key, name, now=None, pool_handle=DEFAULT_HANDLE):
    """
    The state cookie for a transfer of C{name}, sealed under passphrase
    C{key} (L{passphrase_keyring}).

    @param now: the time (default: the system's).
    """
    sealer = CookieSealer(passphrase_keyring(key), pool_handle)
    return sealer.seal(_STATE + name, time.time() if now is None else now)


def open_cookie(key, cookie, now=None, pool_handle=DEFAULT_HANDLE):
    """
    The file name in a cookie of L{make_cookie}, or C{None} if it does not
    open.
    """
    sealer = CookieSealer(passphrase_keyring(key), pool_handle)
    try:
        state = sealer.open(cookie, time.time() if now is None else now)
    except CookieRejected:
        return None
    return state[len(_STATE):] if state.startswith(_STATE) else None


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
    @ivar cookie_refused: the L{CookieRejected} of a Cookie Echo that did
        not open, if any.
    """

    log = Logger()
    source = None
    offset = 0
    resumed_from_cookie = None
    cookie_refused = None
    _call = None
    _sealed_at = None

    def cookieReceived(self, cookie):
        # COOKIE_INDICATION: a PU failed over to us; the cookie comes
        # before its first message.
        try:
            state = self.factory.open_cookie(cookie)
            if not state.startswith(_STATE):
                raise CookieRejected(MALFORMED, "not a transfer cookie")
        except CookieRejected as e:
            # The reason is for our log; the PU hears only that it was bad.
            self.cookie_refused = e
            self.log.warn("transfer: {rejection}; session refused", rejection=str(e))
            self.transport.write(b"ERR bad cookie")
            self.transport.loseConnection()
            return
        name = state[len(_STATE):]
        self.resumed_from_cookie = name
        try:
            self.source = _Source(self.factory.root, name)
        except LookupError as e:
            self.transport.write(b"ERR " + str(e).encode())
            self.transport.loseConnection()
            return
        # A cookie of our own, with a fresh expiry.
        self._set_cookie()

    def _set_cookie(self):
        set_cookie = getattr(self.transport, "set_cookie", None)
        if set_cookie is not None:
            set_cookie(self.factory.seal_cookie(_STATE + self.source.name))
            self._sealed_at = self.factory.clock.seconds()

    def dataReceived(self, data):
        words = data.split(b" ")
        try:
            if words[0] == b"GET" and len(words) == 3:
                self.source = _Source(self.factory.root, words[1])
                self._set_cookie()
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
        if (self._sealed_at is not None
                and factory.clock.seconds() - self._sealed_at >= factory.sealer.lifetime / 2):
            # Long transfers: the PU always holds a cookie far from expiry.
            self._set_cookie()
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
    @ivar key: the pool's cookie passphrase (used without C{cookie_keys} or
        C{sealer}).
    @ivar sealer: the L{CookieSealer} of the pool's cookies.
    @ivar chunk_size: bytes per chunk.
    @ivar chunk_delay: seconds between bursts of chunks.
    @ivar burst: chunks per burst.
    """

    protocol = TransferServer
    log = Logger()

    def __init__(self, root=None, key=DEFAULT_KEY, chunk_size=4096, chunk_delay=0.0,
                 burst=4, clock=None, pool_handle=DEFAULT_HANDLE, cookie_keys=None,
                 sealer=None, cookie_lifetime=DEFAULT_LIFETIME):
        """
        @param pool_handle: the pool's handle, which cookies are bound to.
        @param cookie_keys: the path of the pool's cookie key file.
        @param sealer: a L{CookieSealer} (instead of C{key} or
            C{cookie_keys}).
        @param cookie_lifetime: seconds a cookie is valid.
        @raise rserpool.session.sealing.KeyFileError: C{cookie_keys} cannot
            be used.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.root = root
        self.key = key
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay
        self.burst = burst
        self.clock = clock
        if sealer is None:
            if cookie_keys is not None:
                sealer = CookieSealer.from_file(cookie_keys, pool_handle, lifetime=cookie_lifetime)
            else:
                sealer = CookieSealer(passphrase_keyring(key), pool_handle,
                                      lifetime=cookie_lifetime)
        self.sealer = sealer
        self._checked = clock.seconds()
        self._key_problem = None

    def _keys(self):
        # Rotation: a changed key file is read again (looked at no more than
        # once per KEY_CHECK_INTERVAL); one that cannot be used is said
        # once, and the keys in use stay.
        now = self.clock.seconds()
        if self.sealer.path is None or now - self._checked < KEY_CHECK_INTERVAL:
            return now
        self._checked = now
        try:
            if self.sealer.reload(if_changed=True):
                self.log.info("transfer: cookie keys read again: {keyring!r}",
                              keyring=self.sealer.keyring)
            self._key_problem = None
        except KeyFileError as e:
            if str(e) != self._key_problem:
                self._key_problem = str(e)
                self.log.warn("transfer: {problem}; the cookie keys stay as they were",
                              problem=str(e))
        return now

    def seal_cookie(self, state):
        """
        A sealed cookie holding C{state}.
        """
        return self.sealer.seal(state, self._keys())

    def open_cookie(self, cookie):
        """
        The state in a cookie.

        @raise CookieRejected: it does not open.
        """
        return self.sealer.open(cookie, self._keys())


def server_factory(root=None, key=DEFAULT_KEY, chunk_size=4096, chunk_delay=0.0, clock=None,
                   pool_handle=DEFAULT_HANDLE, cookie_keys=None, sealer=None,
                   cookie_lifetime=DEFAULT_LIFETIME, **options):
    """
    The transfer service's factory (see L{TransferServerFactory}).
    """
    return TransferServerFactory(root, key, chunk_size, chunk_delay, clock=clock,
                                 pool_handle=pool_handle, cookie_keys=cookie_keys,
                                 sealer=sealer, cookie_lifetime=cookie_lifetime)


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
