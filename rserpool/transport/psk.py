"""
TLS with pre-shared keys as Twisted endpoints.

RFC 5355 (sections 2.1 to 2.6) makes TLS with a pre-shared key (PSK, RFC
4279) the mandatory-to-implement way for registrars to authenticate PEs and
each other, and for PEs to authenticate registrars: holding a key of the
pool's key file is what authorizes a node.  Both ends prove that they hold
the key, so one handshake authenticates both; no certificates are involved.
This module gives any stream protocol of rserpool (ASAP, ENRP, the TCP
mapping) TLS-PSK, as endpoints::

    psk:3863:interface=127.0.0.1:keys=/etc/rserpool/psk.keys
    psk:host=192.0.2.1:port=3863:keys=/etc/rserpool/pe.keys:identity=pe-1

The server takes C{PORT}, C{interface}, C{backlog} as C{tcp:} does, plus
C{keys} (the key file: every identity in it may connect), C{hint} (an
identity hint for TLS 1.2 clients) and C{handshakeTimeout} (seconds a
connection may take to finish its handshake, default
L{HANDSHAKE_TIMEOUT}; 0 for none).  The client takes C{host}, C{port},
C{timeout}, C{bindAddress} as C{tcp:} does (or C{psk:HOST:PORT}), plus
C{keys} and C{identity} (which of the file's identities it uses; it may be
left out when the file holds one).

The key file has one key a line, C{IDENTITY HEXKEY [ROLE]}: the identity
is 1 to 128 printable ASCII characters without spaces, the key 16 to 64
bytes written as hexadecimal; empty lines and lines starting with C{#} are
skipped.  The role, in the key file of a registrar's ASAP listener, says
what the identity may do there (L{ROLES}): C{pe} or C{any} (the default)
may register pool elements, C{pu} may only resolve and report (RFC 5355
section 2.3: a pool user's key must not make it a pool element).  Keys are read when the endpoint is made.  A file that users other
than its owner and group may read is refused (C{chmod o-rwx}).

TLS 1.2 and 1.3 are offered.  TLS 1.2 uses only PSK cipher suites with an
ephemeral Diffie-Hellman exchange (C{ECDHE-PSK}, C{DHE-PSK}), TLS 1.3 its
C{psk_dhe_ke} mode: a key that leaks later does not open recorded sessions.
No byte reaches the application before the handshake is done, so a
registrar creates and changes no state for a node that has not
authenticated (RFC 5355 section 2.2.3); once it is done, L{psk_identity}
tells the server which identity the client proved.

pyOpenSSL has no PSK interface; the callbacks are set through the OpenSSL
bindings of the C{cryptography} package that pyOpenSSL itself is built on.
Where they lack PSK, making an endpoint raises L{PSKUnavailable}.
"""
import collections
import os
import stat
import weakref

import attrs

from OpenSSL import SSL
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, \
    TCP6ServerEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from rserpool.asap.pool_user import quote_endpoint
from rserpool.limits import EventLog, host_principal

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "KeyFileError",
    "PSKClientCreator",
    "PSKClientParser",
    "PSKEndpoints",
    "PSKServerCreator",
    "PSKServerEndpoint",
    "PSKServerParser",
    "PSKUnavailable",
    "SECURE_PREFIXES",
    "pe_securer",
    "is_secure",
    "load_keys",
    "parse_keys",
    "psk_identity",
]

#: Seconds a server connection may take to complete its TLS handshake.
HANDSHAKE_TIMEOUT = 30.0

#: Key lengths accepted, in bytes: 128 to 512 bits.
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64
#: The longest identity (RFC 4279 allows 2**16 - 1 bytes; OpenSSL's limit).
MAX_IDENTITY_BYTES = 128

#: TLS 1.2 suites: PSK with an ephemeral key exchange only.
CIPHERS_TLS12 = b"ECDHE-PSK-CHACHA20-POLY1305:kDHEPSK+AESGCM:kDHEPSK+CHACHA20"

_SERVER_CALLBACK = "unsigned int(SSL *, const char *, unsigned char *, unsigned int)"
_CLIENT_CALLBACK = (
    "unsigned int(SSL *, const char *, char *, unsigned int, unsigned char *, unsigned int)"
)


class PSKUnavailable(RuntimeError):
    """
    The OpenSSL bindings installed have no PSK functions.
    """


class KeyFileError(ValueError):
    """
    A key file could not be read or has an error (the message names the
    file and line).
    """


def _bindings():
    # pyOpenSSL's own ffi and lib (the cryptography package's bindings):
    # its Context wraps an SSL_CTX pointer of this very ffi.
    try:
        from OpenSSL._util import ffi, lib
    except ImportError as e:  # pragma: no cover - pyOpenSSL always has it
        raise PSKUnavailable("pyOpenSSL's OpenSSL bindings cannot be loaded: {}".format(e))
    for name in ("SSL_CTX_set_psk_server_callback", "SSL_CTX_set_psk_client_callback",
                 "SSL_CTX_use_psk_identity_hint"):
        if not hasattr(lib, name):
            raise PSKUnavailable(
                "the installed cryptography package's OpenSSL bindings lack {}: "
                "TLS-PSK needs cryptography with PSK support".format(name))
    return ffi, lib


#: What an identity may do at a registrar's ASAP listener, by the role
#: its key file gives it: register pool elements (C{pe}, C{any}) or only
#: use pools (C{pu}).
ROLES = ("any", "pe", "pu")


def parse_keys(text, source="<keys>", roles=None):
    """
    Parse the text of a key file.

    @param text: the file's text.
    @param source: its name, for error messages.
    @param roles: a C{dict} to fill with each identity's role (L{ROLES};
        C{"any"} where the line names none), or C{None}.
    @return: a C{dict} from identity (bytes) to key (bytes), in file order.
    @raise KeyFileError: a line is malformed, an identity repeats, or there
        is no key at all.
    """
    keys = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = "{}, line {}".format(source, number)
        if len(fields) not in (2, 3):
            raise KeyFileError("{}: expected IDENTITY HEXKEY [ROLE]".format(where))
        identity, hexkey = fields[:2]
        role = fields[2].lower() if len(fields) == 3 else "any"
        if role not in ROLES:
            raise KeyFileError("{}: unknown role {!r} ({})".format(
                where, fields[2], ", ".join(ROLES)))
        if not identity.isascii() or not identity.isprintable():
            raise KeyFileError("{}: the identity must be printable ASCII".format(where))
        identity = identity.encode("ascii")
        if len(identity) > MAX_IDENTITY_BYTES:
            raise KeyFileError("{}: identity longer than {} bytes".format(where, MAX_IDENTITY_BYTES))
        try:
            key = bytes.fromhex(hexkey)
        except ValueError:
            raise KeyFileError("{}: the key is not hexadecimal".format(where)) from None
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise KeyFileError("{}: the key has {} bytes ({} to {} allowed)".format(
                where, len(key), MIN_KEY_BYTES, MAX_KEY_BYTES))
        if identity in keys:
            raise KeyFileError("{}: identity {} given twice".format(
                where, identity.decode("ascii")))
        keys[identity] = key
        if roles is not None:
            roles[identity] = role
    if not keys:
        raise KeyFileError("{}: no keys".format(source))
    return keys


def load_keys(path, roles=None):
    """
    Read a key file (see the module's description).

    @param path: the file's path.
    @param roles: a C{dict} to fill with each identity's role, or C{None}.
    @return: a C{dict} from identity (bytes) to key (bytes).
    @raise KeyFileError: the file cannot be read, others may read it, or
        its content is wrong.
    """
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:
        raise KeyFileError("cannot read key file {}: {}".format(path, e.strerror)) from None
    if os.name == "posix" and info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise KeyFileError(
            "key file {} is open to every user of the host: chmod o-rwx {}".format(path, path))
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError("key file {}: not ASCII text".format(path)) from None
    return parse_keys(text, path, roles)


def _context():
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_cipher_list(CIPHERS_TLS12)
    # No session tickets: every connection proves the key anew.
    context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
    return context


class _Peer:
    # What the server side knows of one connection: the identity its peer
    # proved, and its role.
    __slots__ = ("identity", "role", "__weakref__")

    def __init__(self):
        self.identity = None
        self.role = None


#: Server-side connections (OpenSSL.SSL.Connection) -> L{_Peer}.
_PEERS = weakref.WeakKeyDictionary()


def psk_identity(transport):
    """
    The identity the peer of a TLS-PSK server connection proved.

    @param transport: the transport of a protocol behind a
        L{PSKServerEndpoint} (anything with C{getHandle()} returning the
        C{OpenSSL.SSL.Connection}).
    @return: the identity (bytes), or C{None}: not a TLS-PSK server
        connection, or no identity looked up yet.  Ask once the handshake
        is done (L{IHandshakeListener}): an identity is recorded when its
        key is looked up, before the handshake proves the key.
    """
    peer = _peer_of(transport)
    return None if peer is None else peer.identity


def psk_role(transport):
    """
    The role (L{ROLES}) its key file gives the identity the peer of a
    TLS-PSK server connection proved, or C{None} (as L{psk_identity}).
    """
    peer = _peer_of(transport)
    return None if peer is None else peer.role


def _peer_of(transport):
    # What the server side knows of a connection's peer (_Peer), or None.
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    try:
        return _PEERS.get(get_handle())
    except TypeError:
        return None


@implementer(IOpenSSLServerConnectionCreator)
class PSKServerCreator:
    """
    Makes the server side of TLS-PSK connections for Twisted's TLS
    (L{twisted.protocols.tls.TLSMemoryBIOFactory}): a client that presents
    one of C{keys}' identities and proves it holds its key gets in, and
    L{psk_identity} tells which identity it was.

    All connections share one OpenSSL context (one per connection was
    about 100 KB and 0.1 ms more each: a flood of handshakes multiplied
    it).  Its PSK callback tells the connections apart by the address of
    their OpenSSL C{SSL} object, which it is given: OpenSSL's bindings
    offer no way to ask a connection for its PSK identity.  The context
    keeps no sessions, so every connection proves the key anew.

    @ivar identities: the identities accepted (bytes).
    @ivar path: the key file the keys came from, or C{None}.
    """

    log = Logger()

    def __init__(self, keys, hint=None, path=None, roles=None, clock=None):
        """
        @param keys: a C{dict} from identity (bytes) to key (bytes).
        @param roles: a C{dict} from identity to role (L{ROLES}); C{"any"}
            for an identity it does not name.
        @param clock: an C{IReactorTime} for the rate of log lines (the
            reactor by default).
        @param hint: an identity hint sent to TLS 1.2 clients (bytes), or
            C{None}.
        @param path: the key file C{keys} came from (for L{reload}).
        @raise PSKUnavailable: OpenSSL's PSK functions are not available.
        @raise ValueError: the hint is refused.
        """
        ffi, lib = _bindings()
        self._ffi = ffi
        self._lib = lib
        self._keys = dict(keys)
        self._roles = dict(roles or {})
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self._events = EventLog(lambda: self.log)
        self._hint = hint
        self.path = path
        #: handshakes that failed on listeners of this creator, by reason
        #: (L{handshake_failure}; for metrics)
        self.handshake_failures = collections.Counter()
        # The TLS protocols of the connections made, and what is known of
        # their peers.
        self._connections = weakref.WeakKeyDictionary()
        self.identities = frozenset(self._keys)
        # The SSL objects of live connections (their addresses) -> _Peer;
        # an entry goes with its connection (_PEERS holds the _Peer).
        self._by_ssl = weakref.WeakValueDictionary()
        self._callback = None
        self._context = self._make_context()

    def _make_context(self):
        context = _context()
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ffi = self._ffi
        keys = self._keys
        roles = self._roles
        events = self._events
        clock = self._clock
        by_ssl = self._by_ssl

        def find_key(ssl, identity, out, size):
            name = ffi.string(identity) if identity != ffi.NULL else b""
            key = keys.get(name)
            peer = by_ssl.get(int(ffi.cast("uintptr_t", ssl)))
            if key is None or len(key) > size or peer is None:
                # A peer chooses how often: at a bounded rate.
                events.warn(clock.seconds(), "TLS-PSK: refused unknown identity {identity!r}",
                            identity=name[:64])
                return 0
            ffi.memmove(out, key, len(key))
            peer.identity = name
            peer.role = roles.get(name, "any")
            return len(key)

        # The callback object must live as long as the context.
        self._callback = ffi.callback(_SERVER_CALLBACK, find_key, error=0)
        self._lib.SSL_CTX_set_psk_server_callback(context._context, self._callback)
        if self._hint is not None:
            if not self._lib.SSL_CTX_use_psk_identity_hint(context._context, self._hint):
                raise ValueError("bad PSK identity hint {!r}".format(self._hint))
        return context

    def reload(self):
        """
        Read the key file again: handshakes from now on use its keys.
        Connections already authenticated are left to the caller (see
        the identities returned).

        @return: the set of identities that are no longer in the file.
        @raise KeyFileError: the file cannot be used; the keys stay as they
            were.
        @raise ValueError: there is no key file to read.
        """
        if self.path is None:
            raise ValueError("these keys came from no file")
        roles = {}
        keys = load_keys(self.path, roles)
        removed = set(self._keys) - set(keys)
        # In place: the contexts' callbacks hold these very dicts.
        self._keys.clear()
        self._keys.update(keys)
        self._roles.clear()
        self._roles.update(roles)
        self.identities = frozenset(keys)
        return removed

    def revoke(self, identities):
        """
        Close the connections whose peers authenticated with one of
        C{identities}.

        @return: how many were closed.
        """
        closed = 0
        for protocol, peer in list(self._connections.items()):
            if peer.identity in identities and protocol.transport is not None:
                # At once: a revoked key buys nothing more, not even the
                # rest of what is queued for it (and a graceful TLS close
                # would wait for the connection's guard to let go).
                protocol.abortConnection()
                closed += 1
        return closed

    def serverConnectionForTLS(self, tlsProtocol):
        """
        @return: a new server-side C{OpenSSL.SSL.Connection}.
        """
        peer = _Peer()
        connection = SSL.Connection(self._context, None)
        _PEERS[connection] = peer
        # A new SSL object may have the address of one that is gone: this
        # entry replaces whatever was left of it.
        self._by_ssl[int(self._ffi.cast("uintptr_t", connection._ssl))] = peer
        self._connections[tlsProtocol] = peer
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class PSKClientCreator:
    """
    Makes the client side of TLS-PSK connections: it presents C{identity}
    and proves it holds C{key}; the server proves the same.
    """

    def __init__(self, identity, key):
        """
        @param identity: the identity (bytes).
        @param key: the key (bytes).
        @raise PSKUnavailable: OpenSSL's PSK functions are not available.
        """
        ffi, lib = _bindings()
        self._ffi = ffi
        self.identity = identity
        self._key = key
        self._context = _context()
        self._callback = ffi.callback(_CLIENT_CALLBACK, self._give_key, error=0)
        lib.SSL_CTX_set_psk_client_callback(self._context._context, self._callback)

    def _give_key(self, ssl, hint, identity_out, identity_size, key_out, key_size):
        identity = self.identity + b"\0"
        if len(identity) > identity_size or len(self._key) > key_size:
            return 0
        self._ffi.memmove(identity_out, identity, len(identity))
        self._ffi.memmove(key_out, self._key, len(self._key))
        return len(self._key)

    def clientConnectionForTLS(self, tlsProtocol):
        """
        @return: a new client-side C{OpenSSL.SSL.Connection}.
        """
        connection = SSL.Connection(self._context, None)
        connection.set_connect_state()
        return connection


@implementer(IHandshakeListener)
class _HandshakeDeadline(ProtocolWrapper):
    # Between TLS and the application's protocol: closes a connection that
    # has not finished its handshake in time, so that connections which
    # never authenticate cannot pile up.

    _deadline = None
    _done = False

    def makeConnection(self, transport):
        timeout = self.factory.timeout
        if timeout:
            self._deadline = self.factory.clock.callLater(timeout, self._expired)
        ProtocolWrapper.makeConnection(self, transport)

    def _expired(self):
        self._deadline = None
        self._done = True
        self.factory.failures["timeout"] += 1
        self.factory.log.info("TLS-PSK: no handshake from {peer} in {timeout} s; closing",
                              peer=self.transport.getPeer(), timeout=self.factory.timeout)
        self.transport.abortConnection()

    def handshakeCompleted(self):
        self._done = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        listener = IHandshakeListener(self.wrappedProtocol, None)
        if listener is not None:
            listener.handshakeCompleted()

    def connectionLost(self, reason):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if not self._done:
            self._done = True
            self.factory.failures[handshake_failure(reason)] += 1
        ProtocolWrapper.connectionLost(self, reason)


def handshake_failure(reason):
    """
    Why a TLS handshake failed, in a word, from the L{Failure} its
    connection was lost with: C{unknown identity}, C{bad key} (the PSK did
    not match: the peer's Finished did not verify), C{tls error} (another
    TLS alert or error) or C{closed} (the peer went away before finishing).
    """
    if reason is not None and reason.check(SSL.Error):
        text = str(reason.value).lower()
        # TLS 1.2 says so; in TLS 1.3 a server that finds no key for the
        # client's identity falls back to certificates, which it has none of.
        if "psk identity" in text or "unknown psk" in text or \
                "no suitable signature algorithm" in text:
            return "unknown identity"
        if "decrypt" in text or "bad record mac" in text or "bad_record_mac" in text or \
                "digest check failed" in text or "binder" in text:
            return "bad key"
        return "tls error"
    return "closed"


class _HandshakeDeadlineFactory(WrappingFactory):
    protocol = _HandshakeDeadline
    log = Logger()
    # The application's factory logs its own start and stop.
    noisy = False

    def __init__(self, wrappedFactory, timeout, clock, failures=None):
        WrappingFactory.__init__(self, wrappedFactory)
        self.timeout = timeout
        self.clock = clock
        self.failures = failures if failures is not None else collections.Counter()


@implementer(IStreamServerEndpoint)
class PSKServerEndpoint:
    """
    A stream server endpoint (usually TCP) whose connections are TLS-PSK.

    The protocols of C{factory} see only authenticated connections'
    bytes; a connection that has not finished its handshake after
    C{handshake_timeout} seconds is aborted.
    """

    def __init__(self, reactor, endpoint, creator, handshake_timeout=HANDSHAKE_TIMEOUT):
        """
        @param reactor: the reactor (for the handshake deadline).
        @param endpoint: the server endpoint to wrap.
        @param creator: a L{PSKServerCreator}.
        @param handshake_timeout: seconds; 0 or C{None} for no deadline.
        """
        self._reactor = reactor
        self._endpoint = endpoint
        #: The L{PSKServerCreator} (its keys can be reloaded).
        self.creator = creator
        self._handshake_timeout = handshake_timeout

    def listen(self, protocolFactory):
        """
        Listen with TLS-PSK on the wrapped endpoint.

        @return: a L{Deferred} firing with the listening port.
        """
        # Inside TLS, where the handshake's end is reported.
        deadline = _HandshakeDeadlineFactory(
            protocolFactory, self._handshake_timeout, self._reactor,
            getattr(self.creator, "handshake_failures", None))
        factory = TLSMemoryBIOFactory(self.creator, False, deadline)
        turns = getattr(protocolFactory, "turns", None)
        if turns is not None:
            # Outside TLS: handshakes take their turns with the messages.
            limits = getattr(protocolFactory, "limits", None)
            factory = _HandshakeTurnsFactory(factory, turns, getattr(limits, "ipv6_prefix", 64))
        return self._endpoint.listen(factory)


class _HandshakeTurns(ProtocolWrapper):
    # Outside TLS on a registrar's listener: the bytes of a handshake go to
    # TLS as the registrar's messages go to it (TurnScheduler): at once
    # while the arrivals' slice lasts, else in a turn of their source, the
    # connection unread meanwhile.  A handshake costs the server about
    # half a millisecond (key exchange, and Twisted's failure handling
    # when it fails); a look at the sockets that found a thousand of them
    # readable spent it a thousand times in one go (issue #14).  Once the
    # handshake is done, the messages inside take their own turns.

    _held = None
    _key = None

    def makeConnection(self, transport):
        self._key = host_principal(getattr(transport.getPeer(), "host", None),
                                   self.factory.prefix)
        ProtocolWrapper.makeConnection(self, transport)

    def dataReceived(self, data):
        if getattr(self.wrappedProtocol, "_handshakeDone", True):
            self.wrappedProtocol.dataReceived(data)
            return
        turns = self.factory.turns
        if self._held is None and turns.at_once(self._key):
            turns.run_at_once(self._deliver, data)
            return
        if self._held is None:
            self._held = bytearray()
            self.transport.pauseProducing()
            turns.wait(self._key, self)
        self._held += data

    def _deliver(self, data, deadline):
        # A handshake's bytes go to TLS whole (no deadline inside it).
        self.wrappedProtocol.dataReceived(data)

    def take_turn(self, quantum):
        held, self._held = self._held, None
        if held is None or self.transport is None or self.disconnecting:
            return
        self.transport.resumeProducing()
        self.wrappedProtocol.dataReceived(bytes(held))

    def connectionLost(self, reason):
        if self._held is not None:
            self._held = None
            self.factory.turns.forget(self._key, self)
        ProtocolWrapper.connectionLost(self, reason)


class _HandshakeTurnsFactory(WrappingFactory):
    protocol = _HandshakeTurns
    noisy = False

    def __init__(self, wrappedFactory, turns, prefix):
        WrappingFactory.__init__(self, wrappedFactory)
        self.turns = turns
        self.prefix = prefix


def _choose_key(keys, identity, path):
    if identity is None:
        if len(keys) != 1:
            raise ValueError(
                "psk client endpoint: key file {} holds {} identities; say which with "
                "identity=".format(path, len(keys)))
        return next(iter(keys.items()))
    name = identity.encode("ascii", "replace")
    if name not in keys:
        raise ValueError("psk client endpoint: no identity {!r} in key file {}".format(
            identity, path))
    return name, keys[name]


def pe_securer(path, identity=None):
    """
    What a pool user passes as C{secure} to
    L{rserpool.pu.PoolClientEndpoint} to reach the PEs over TLS-PSK, once
    the key file is checked: it reads, and it holds C{identity} (or exactly
    one identity when C{identity} is C{None}).

    @return: a function from a PE's client endpoint string to its C{psk:}
        form (L{PSKEndpoints.client}).
    @raise ValueError: with a one-line reason.
    """
    _choose_key(load_keys(path), identity, path)
    return PSKEndpoints(path, identity).client


def _seconds(what, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError("psk endpoint: {} must be a number of seconds, not {!r}".format(
            what, value)) from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("psk endpoint: {} must be 0 or more seconds".format(what))
    return value


def _port(value, low=0):
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError("psk endpoint: port must be a number, not {!r}".format(value)) from None
    if not low <= port <= 65535:
        raise ValueError("psk endpoint: port {} out of range".format(port))
    return port


@implementer(IPlugin, IStreamServerEndpointStringParser)
class PSKServerParser:
    """
    Parses C{psk:PORT:keys=FILE[:interface=ADDR][:backlog=N][:hint=TEXT]
    [:handshakeTimeout=S]}.
    """

    prefix = "psk"

    def parseStreamServer(self, reactor, port=None, keys=None, interface="", backlog=50,
                          hint=None, handshakeTimeout=HANDSHAKE_TIMEOUT, **unknown):
        if unknown:
            raise ValueError("psk server endpoint: unknown option(s) {}".format(
                ", ".join(sorted(unknown))))
        if port is None:
            raise ValueError("psk server endpoint: no port (psk:PORT:keys=FILE)")
        if not keys:
            raise ValueError("psk server endpoint: no key file (keys=FILE)")
        number = _port(port)
        try:
            backlog = int(backlog)
        except (TypeError, ValueError):
            raise ValueError("psk server endpoint: backlog must be a number") from None
        timeout = _seconds("handshakeTimeout", handshakeTimeout)
        try:
            roles = {}
            creator = PSKServerCreator(
                load_keys(keys, roles), None if hint is None else hint.encode("ascii", "replace"),
                path=keys, roles=roles)
        except PSKUnavailable as e:
            raise ValueError("psk server endpoint: {}".format(e)) from None
        kind = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
        return PSKServerEndpoint(
            reactor, kind(reactor, number, backlog, interface), creator, timeout)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class PSKClientParser:
    """
    Parses C{psk:host=H:port=P:keys=FILE[:identity=ID][:timeout=S]
    [:bindAddress=ADDR]} (or C{psk:H:P:...}).
    """

    prefix = "psk"

    def parseStreamClient(self, reactor, *args, **kwargs):
        for name, value in zip(("host", "port"), args):
            kwargs.setdefault(name, value)
        if len(args) > 2:
            raise ValueError("psk client endpoint: too many arguments")
        host = kwargs.pop("host", None)
        port = kwargs.pop("port", None)
        path = kwargs.pop("keys", None)
        identity = kwargs.pop("identity", None)
        timeout = _seconds("timeout", kwargs.pop("timeout", 30))
        bind = kwargs.pop("bindAddress", None)
        if kwargs:
            raise ValueError("psk client endpoint: unknown option(s) {}".format(
                ", ".join(sorted(kwargs))))
        if not host or port is None:
            raise ValueError("psk client endpoint: needs host=...:port=...")
        if not path:
            raise ValueError("psk client endpoint: no key file (keys=FILE)")
        name, key = _choose_key(load_keys(path), identity, path)
        tcp = TCP4ClientEndpoint(reactor, host, _port(port, 1), timeout,
                                 (bind, 0) if bind else None)
        try:
            creator = PSKClientCreator(name, key)
        except PSKUnavailable as e:
            raise ValueError("psk client endpoint: {}".format(e)) from None
        return wrapClientTLS(creator, tcp)


def _split_prefix(description):
    prefix, _, rest = description.strip().partition(":")
    return prefix.strip().lower(), rest


@attrs.frozen
class PSKEndpoints:
    """
    How a registrar secures every endpoint it listens on or dials with
    TLS-PSK (C{twistd enrp --psk-keys}): C{tcp:} endpoint strings become
    C{psk:} ones with a key file (and, for clients, the identity); C{psk:}
    strings stay as they are; anything else cannot be secured.

    The ASAP listeners take the keys of C{keys}, the ENRP listener and the
    connections to peers those of C{peer_keys}: with one file for both,
    every holder of a key may also act as a registrar.

    @ivar keys: the path of the key file for ASAP (PEs and PUs).
    @ivar identity: the identity presented when dialing a peer (str), or
        C{None} when the peers' key file holds exactly one.
    @ivar peer_keys: the path of the key file for ENRP, or C{None} for
        C{keys}.
    """

    keys: str
    identity: str = None
    peer_keys: str = None

    @property
    def peer_file(self):
        """
        The key file ENRP uses.
        """
        return self.peer_keys if self.peer_keys is not None else self.keys

    def server(self, description, peer=False):
        """
        @param description: a server endpoint string.
        @param peer: whether it serves ENRP (else ASAP).
        @return: its TLS-PSK form.
        @raise ValueError: it is neither C{tcp:}, C{tcp6:} nor C{psk:}.
        """
        prefix, rest = _split_prefix(description)
        if prefix == "psk":
            return description
        if prefix in ("tcp", "tcp6"):
            path = self.peer_file if peer else self.keys
            return "psk:{}:keys={}".format(rest, quote_endpoint(path))
        raise ValueError(
            "TLS-PSK runs over TCP only: cannot secure {!r}".format(description))

    def client(self, description):
        """
        @param description: a client endpoint string (an ENRP peer's, or a
            PE's for a pool user).
        @return: its TLS-PSK form.
        @raise ValueError: it is neither C{tcp:} nor C{psk:}.
        """
        prefix, rest = _split_prefix(description)
        if prefix == "psk":
            return description
        if prefix in ("tcp", "tcp6"):
            secured = "psk:{}:keys={}".format(rest, quote_endpoint(self.peer_file))
            if self.identity is not None:
                secured += ":identity=" + quote_endpoint(self.identity)
            return secured
        raise ValueError(
            "TLS-PSK runs over TCP only: cannot secure {!r}".format(description))


#: Endpoint string prefixes whose connections are authenticated (RFC 5355
#: section 2.15.3: a registrar's handlespace holds only secured
#: registrations, or none).
SECURE_PREFIXES = frozenset(["psk", "ssl", "tls"])


def is_secure(description):
    """
    @param description: an endpoint string.
    @return: whether its connections use TLS (C{psk:}, C{ssl:}, C{tls:}).
    """
    return _split_prefix(description)[0] in SECURE_PREFIXES
