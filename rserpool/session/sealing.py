"""
Sealed state cookies: what a pool element gives a pool user to carry, so
that another PE of the pool can resume its session after a failover
(Cookie and Cookie Echo, services draft section 4.5.1).

A cookie travels through the pool user, which may read it, change it, keep
it for later or hand it to another pool.  RFC 5355 section 2.16 leaves
signing and encrypting cookies to the PEs ("it must share keys and other
information with other PEs"); the IPsec gateway failover problem statement
(draft-vidya-ipsec-failover-ps, goal 6) asks of state stored in the client
"an equally secure means of storing" it, with confidentiality, integrity
and a way to tell that it belongs to the right domain.  L{CookieSealer}
gives the PEs of one pool that:

 - confidentiality and integrity: AES-256-GCM, under a key every PE of the
   pool holds (a L{Keyring}: the current key seals, the previous keys still
   open, so that keys can be rotated without breaking sessions);
 - freshness: an expiry time inside the sealed part;
 - pool binding: the pool handle is authenticated with the cookie
   (associated data), so a cookie of another pool never opens, even under
   a key both pools share.

It does not stop replay: the pool user may present the same cookie again,
to any PE of the pool, until it expires (see C{doc/security.rst}).

This module is sans-IO but for L{load_keyring} and L{CookieSealer.reload},
which read a key file: the time is passed in (C{now}, POSIX seconds as
C{reactor.seconds()} gives them), and the randomness can be (C{urandom}).

The format (version 1)::

    offset  size  field
    0       1     0xA5, the mark of a sealed cookie
    1       1     format version: 1
    2       1     k, the length of the key id (1 to 32)
    3       k     key id: which key of the keyring sealed it
    3+k     4     pool tag: the first 4 bytes of SHA-256("rserpool pool
                  tag", a zero byte, the pool handle)
    7+k     24    nonce: 12 bytes of salt, then the 12-byte AES-GCM nonce
    31+k    n+24  AES-256-GCM of (expiry, 8 bytes: milliseconds since the
                  epoch, big-endian; then the state), with its 16-byte tag

The AES key is HMAC-SHA256 under the pool's key of "rserpool sealed
cookie v1", a zero byte and the salt: a fresh key for every cookie.  With
one key and random 96-bit nonces, AES-GCM is safe for about 2**32
messages; a pool that sets a cookie with every answer (as PingPong does)
may seal that many in days.
The associated data is the header (bytes 0 to 31+k) followed by the pool
handle.  The pool tag only makes the reason in the logs precise (a cookie
of another pool is reported as such): the binding itself is the
authenticated pool handle.
"""
import hashlib
import hmac
import math
import os
import stat
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ALTERED",
    "CookieRejected",
    "CookieSealer",
    "CookieTooLarge",
    "DEFAULT_LIFETIME",
    "EXPIRED",
    "FORGED",
    "KEY_BYTES",
    "KeyFileError",
    "Keyring",
    "MALFORMED",
    "MAX_COOKIE_SIZE",
    "MAX_KEY_ID_BYTES",
    "OTHER_POOL",
    "REASONS",
    "UNKNOWN_KEY",
    "load_keyring",
    "pool_tag",
]

#: Why a cookie was refused (L{CookieRejected.reason}).  For logs: never
#: tell the peer.
#: The bytes are not a sealed cookie at all (random bytes, another format).
FORGED = "forged"
#: Authentication failed: the cookie was changed, or sealed under another
#: key that has the same key id.
ALTERED = "altered"
#: Genuine, but past its expiry time.
EXPIRED = "expired"
#: Sealed for another pool (its pool tag names another handle).
OTHER_POOL = "other pool"
#: Sealed under a key id this keyring does not hold (dropped, or never
#: given to this PE).
UNKNOWN_KEY = "unknown key"
#: Truncated, oversized, or a format version this code does not know.
MALFORMED = "malformed"

REASONS = (FORGED, ALTERED, EXPIRED, OTHER_POOL, UNKNOWN_KEY, MALFORMED)

#: The size of a pool key: AES-256.
KEY_BYTES = 32
#: The longest key id.
MAX_KEY_ID_BYTES = 32
#: The largest sealed cookie, sealed or accepted.  The ASAP Cookie
#: parameter is a TLV with a 16-bit length inside a message with a 16-bit
#: length (RFC 5354 section 3.12, RFC 5352 section 2.2.11); every PE of a pool
#: must agree on this bound, so it is not a setting.
MAX_COOKIE_SIZE = 16 * 1024
#: Seconds a cookie stays valid unless the sealer is told otherwise.
DEFAULT_LIFETIME = 3600.0

_MARK = 0xA5
_VERSION = 1
_POOL_TAG = 4
_SALT = 12
_NONCE = 12
_TAG = 16
_EXPIRY = struct.Struct("!Q")
_LABEL = b"rserpool sealed cookie v1\x00"
_SMALLEST = 3 + 1 + _POOL_TAG + _SALT + _NONCE + _EXPIRY.size + _TAG


class CookieRejected(Exception):
    """
    A cookie did not open.

    @ivar reason: one of L{REASONS} (L{FORGED}, L{ALTERED}, L{EXPIRED},
        L{OTHER_POOL}, L{UNKNOWN_KEY}, L{MALFORMED}).
    @ivar detail: a line for the log.
    """

    def __init__(self, reason, detail):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        return "cookie refused ({}): {}".format(self.reason, self.detail)


class CookieTooLarge(ValueError):
    """
    The state does not fit in a cookie of L{MAX_COOKIE_SIZE} bytes.
    """


class KeyFileError(ValueError):
    """
    A cookie key file could not be read or has an error (the message names
    the file and line).
    """


def _key_id(value):
    if isinstance(value, str):
        try:
            value = value.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("a key id is printable ASCII: {!r}".format(value)) from None
    value = bytes(value)
    if not 1 <= len(value) <= MAX_KEY_ID_BYTES:
        raise ValueError("a key id has 1 to {} bytes, not {}".format(MAX_KEY_ID_BYTES, len(value)))
    if not all(0x21 <= b <= 0x7E for b in value):
        raise ValueError("a key id is printable ASCII without spaces: {!r}".format(value))
    return value


def _key(value):
    value = bytes(value)
    if len(value) != KEY_BYTES:
        raise ValueError("a cookie key has {} bytes (AES-256), not {}".format(
            KEY_BYTES, len(value)))
    return value


def _show(key_id):
    return key_id.decode("ascii", "backslashreplace")


class Keyring:
    """
    The keys of a pool: the current one seals, every one opens.

    Immutable: the methods that rotate keys return a new keyring, which a
    L{CookieSealer} takes with L{CookieSealer.use}.  The C{repr} shows the
    key ids only.

    @ivar ids: the key ids (C{bytes}), the current one first.
    """

    def __init__(self, keys):
        """
        @param keys: C{(key_id, key)} pairs, the current key first; a key id
            is 1 to 32 printable ASCII characters (C{str} or C{bytes}), a key
            32 bytes.
        @raise ValueError: no key, a key id given twice, a malformed key id
            or key.
        """
        table = {}
        for key_id, key in keys:
            key_id = _key_id(key_id)
            if key_id in table:
                raise ValueError("key id {} given twice".format(_show(key_id)))
            table[key_id] = _key(key)
        if not table:
            raise ValueError("a keyring needs a key")
        self._keys = table
        self.ids = tuple(table)

    @property
    def current_id(self):
        """
        The id of the key that seals.
        """
        return self.ids[0]

    def key(self, key_id):
        """
        The key with id C{key_id}, or C{None}.
        """
        return self._keys.get(bytes(key_id))

    def __contains__(self, key_id):
        return self.key(key_id) is not None

    def __len__(self):
        return len(self.ids)

    def __eq__(self, other):
        if not isinstance(other, Keyring):
            return NotImplemented
        return list(self._keys.items()) == list(other._keys.items())

    def __repr__(self):
        return "<Keyring current={} previous=[{}]>".format(
            _show(self.ids[0]), ", ".join(_show(i) for i in self.ids[1:]))

    def _pairs(self):
        return list(self._keys.items())

    def rotated(self, key_id, key, keep=1):
        """
        A new current key, in one step (a single PE; for a pool, see
        L{adding}): the former current key and the previous ones after it,
        C{keep} of them in all, become the previous keys.
        """
        return Keyring([(key_id, key)] + self._pairs()[:keep])

    def adding(self, key_id, key):
        """
        Step 1 of a rotation across a pool: C{key_id} opens cookies, the
        current key still seals.
        """
        return Keyring(self._pairs() + [(key_id, key)])

    def promoting(self, key_id):
        """
        Step 2: C{key_id}, already held, becomes the current key; the
        former current key stays, as a previous key.
        """
        key_id = _key_id(key_id)
        if key_id not in self._keys:
            raise ValueError("no key {} to make current".format(_show(key_id)))
        pairs = self._pairs()
        return Keyring([(key_id, self._keys[key_id])] + [p for p in pairs if p[0] != key_id])

    def dropping(self, key_id):
        """
        Step 3: forget C{key_id} (a previous key): its cookies no longer
        open.
        """
        key_id = _key_id(key_id)
        if key_id == self.current_id:
            raise ValueError("key {} seals: make another key current first".format(_show(key_id)))
        return Keyring([p for p in self._pairs() if p[0] != key_id])

    @classmethod
    def parse(cls, text, source="<keys>"):
        """
        Read the text of a cookie key file: one C{KEYID HEXKEY} a line, the
        current key first; empty lines and lines starting with C{#} are
        skipped.

        @param source: the file's name, for error messages.
        @raise KeyFileError: naming C{source} and the line.
        """
        pairs = []
        seen = set()
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = "{}, line {}".format(source, number)
            fields = line.split()
            if len(fields) != 2:
                raise KeyFileError("{}: expected KEYID HEXKEY".format(where))
            try:
                key_id = _key_id(fields[0])
            except ValueError as e:
                raise KeyFileError("{}: {}".format(where, e)) from None
            try:
                key = bytes.fromhex(fields[1])
            except ValueError:
                raise KeyFileError("{}: the key is not hexadecimal".format(where)) from None
            if len(key) != KEY_BYTES:
                raise KeyFileError(
                    "{}: the key has {} bytes; a cookie key has {} ({} hexadecimal digits)".format(
                        where, len(key), KEY_BYTES, 2 * KEY_BYTES))
            if key_id in seen:
                raise KeyFileError("{}: key id {} given twice".format(where, _show(key_id)))
            seen.add(key_id)
            pairs.append((key_id, key))
        if not pairs:
            raise KeyFileError("{}: no keys".format(source))
        return cls(pairs)


def _stamp(info):
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _read_key_file(path):
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            data = f.read(1024 * 1024)
    except OSError as e:
        raise KeyFileError("cannot read cookie key file {}: {}".format(path, e.strerror)) from None
    if os.name == "posix" and info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise KeyFileError(
            "cookie key file {} is open to every user of the host: chmod o-rwx {}".format(
                path, path))
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError("cookie key file {}: not ASCII text".format(path)) from None
    return Keyring.parse(text, path), _stamp(info)


def load_keyring(path):
    """
    Read a cookie key file (L{Keyring.parse}).

    @raise KeyFileError: the file cannot be read, users other than its owner
        and group may read or write it, or its text is wrong.
    """
    return _read_key_file(path)[0]


def pool_tag(pool_handle):
    """
    The 4 bytes in the clear that tell which pool sealed a cookie.
    """
    return hashlib.sha256(b"rserpool pool tag\x00" + pool_handle).digest()[:_POOL_TAG]


def _handle(pool_handle):
    if isinstance(pool_handle, str):
        pool_handle = pool_handle.encode("utf-8")
    pool_handle = bytes(pool_handle)
    if not pool_handle:
        raise ValueError("a pool handle is not empty")
    return pool_handle


class CookieSealer:
    """
    Seals and opens the state cookies of one pool.

    @ivar keyring: the L{Keyring} in use.
    @ivar pool_handle: the pool's handle (C{bytes}).
    @ivar lifetime: seconds from sealing to expiry.
    @ivar path: the key file (L{from_file}), or C{None}.
    """

    def __init__(self, keyring, pool_handle, lifetime=DEFAULT_LIFETIME, urandom=os.urandom):
        """
        @param keyring: a L{Keyring}.
        @param pool_handle: the handle of the pool whose PEs share the keys
            (C{bytes}, or C{str} as UTF-8).
        @param lifetime: seconds a cookie is valid after sealing.
        @param urandom: C{urandom(n)} gives C{n} random bytes (for tests: a
            fixed value gives known cookies).
        """
        if not isinstance(keyring, Keyring):
            raise TypeError("a CookieSealer takes a Keyring, not {}".format(type(keyring).__name__))
        lifetime = float(lifetime)
        if not (lifetime > 0 and math.isfinite(lifetime)):
            raise ValueError("a cookie lifetime is a positive number of seconds")
        self.keyring = keyring
        self.pool_handle = _handle(pool_handle)
        self.lifetime = lifetime
        self.path = None
        self._stamp = None
        self._urandom = urandom
        self._tag = pool_tag(self.pool_handle)

    @classmethod
    def from_file(cls, path, pool_handle, **options):
        """
        A sealer with the keys of a key file (L{load_keyring}), which
        L{reload} reads again.

        @raise KeyFileError: the file cannot be used.
        """
        keyring, stamp = _read_key_file(path)
        sealer = cls(keyring, pool_handle, **options)
        sealer.path = path
        sealer._stamp = stamp
        return sealer

    def use(self, keyring):
        """
        Seal and open with C{keyring} from now on.
        """
        if not isinstance(keyring, Keyring):
            raise TypeError("a CookieSealer takes a Keyring, not {}".format(type(keyring).__name__))
        self.keyring = keyring

    def reload(self, if_changed=False):
        """
        Read the key file again.

        @param if_changed: only if its size, modification time or inode
            changed since it was last read.
        @return: C{True} if the keys were read.
        @raise KeyFileError: the file cannot be used; the keys in use stay.
        """
        if self.path is None:
            raise ValueError("this sealer has no key file")
        if if_changed:
            try:
                if _stamp(os.stat(self.path)) == self._stamp:
                    return False
            except OSError as e:
                raise KeyFileError("cannot read cookie key file {}: {}".format(
                    self.path, e.strerror)) from None
        keyring, stamp = _read_key_file(self.path)
        self.keyring, self._stamp = keyring, stamp
        return True

    @property
    def max_state_size(self):
        """
        The largest state L{seal} takes with the current key.
        """
        return MAX_COOKIE_SIZE - (_SMALLEST - 1 + len(self.keyring.current_id))

    def seal(self, state, now):
        """
        Seal C{state} for the PEs of the pool.

        @param state: C{bytes}.
        @param now: the time, in seconds since the epoch.
        @return: the cookie (C{bytes}).
        @raise CookieTooLarge: the cookie would exceed L{MAX_COOKIE_SIZE}.
        """
        if not isinstance(state, (bytes, bytearray, memoryview)):
            raise TypeError("a cookie's state is bytes, not {}".format(type(state).__name__))
        state = bytes(state)
        if len(state) > self.max_state_size:
            raise CookieTooLarge("a state of {} bytes does not fit in a cookie: at most {}".format(
                len(state), self.max_state_size))
        # In whole milliseconds; rounded first, so that float error
        # ((1.0 + 0.001) * 1000 is 1000.9999999999999) cannot take the last
        # millisecond of a short lifetime away.
        expires = math.floor(round((now + self.lifetime) * 1000, 6))
        if not 0 <= expires < 1 << 64:
            raise ValueError("the time {!r} is out of range".format(now))
        key_id = self.keyring.current_id
        nonce = bytes(self._urandom(_SALT + _NONCE))
        if len(nonce) != _SALT + _NONCE:
            raise ValueError("urandom gave {} bytes, not {}".format(len(nonce), _SALT + _NONCE))
        header = bytes((_MARK, _VERSION, len(key_id))) + key_id + self._tag + nonce
        aead = AESGCM(_subkey(self.keyring.key(key_id), nonce[:_SALT]))
        return header + aead.encrypt(nonce[_SALT:], _EXPIRY.pack(expires) + state,
                                     header + self.pool_handle)

    def open(self, cookie, now):
        """
        The state sealed in C{cookie}, if it is genuine, fresh and of this
        pool.

        @param cookie: what the pool user presented (Cookie Echo).
        @param now: the time, in seconds since the epoch.
        @raise CookieRejected: with the reason, for the log.  Nothing else
            is raised, whatever C{cookie} holds.
        """
        if not isinstance(cookie, (bytes, bytearray, memoryview)):
            raise CookieRejected(MALFORMED, "not bytes but {}".format(type(cookie).__name__))
        cookie = bytes(cookie)
        size = len(cookie)
        # Refuse oversized input before looking into it.
        if size > MAX_COOKIE_SIZE:
            raise CookieRejected(MALFORMED, "{} bytes; a sealed cookie has at most {}".format(
                size, MAX_COOKIE_SIZE))
        if size < 2 or cookie[0] != _MARK:
            raise CookieRejected(FORGED, "not a sealed cookie")
        if cookie[1] != _VERSION:
            raise CookieRejected(MALFORMED, "format version {} unknown".format(cookie[1]))
        k = cookie[2] if size > 2 else 0
        if not 1 <= k <= MAX_KEY_ID_BYTES:
            raise CookieRejected(MALFORMED, "a key id of {} bytes".format(k))
        if size < _SMALLEST - 1 + k:
            raise CookieRejected(MALFORMED, "truncated: {} bytes".format(size))
        key_id = cookie[3:3 + k]
        body = 3 + k + _POOL_TAG
        if cookie[3 + k:body] != self._tag:
            raise CookieRejected(OTHER_POOL, "sealed for another pool than {}".format(
                self.pool_handle.decode("utf-8", "backslashreplace")))
        key = self.keyring.key(key_id)
        if key is None:
            raise CookieRejected(UNKNOWN_KEY, "key id {} is not in the keyring".format(
                _show(key_id)))
        nonce = cookie[body:body + _SALT + _NONCE]
        header = cookie[:body + _SALT + _NONCE]
        try:
            plain = AESGCM(_subkey(key, nonce[:_SALT])).decrypt(
                nonce[_SALT:], cookie[len(header):], header + self.pool_handle)
        except InvalidTag:
            raise CookieRejected(ALTERED, "authentication failed (key id {})".format(
                _show(key_id))) from None
        (expires,) = _EXPIRY.unpack_from(plain)
        if round(now * 1000, 6) >= expires:
            raise CookieRejected(EXPIRED, "expired {:.3f} s ago".format(now - expires / 1000))
        return plain[_EXPIRY.size:]


def _subkey(key, salt):
    # A key of its own for every cookie: the 12-byte AES-GCM nonce is then
    # never the only thing that keeps two cookies apart (see the module's
    # description).
    return hmac.digest(key, _LABEL + salt, "sha256")
