"""
Sealed state cookies (L{rserpool.session.sealing}): known-answer vectors,
every reason a cookie is refused, key rotation, the key file, properties
over arbitrary bytes; the session layer's sealer (L{PESessionFactory}
with C{sealer}); and the transfer example on loopback, where a pool user
presents a forged, altered, expired or other pool's cookie at Cookie Echo
and the new PE refuses it, while a genuine one resumes (RFC 5355 section
2.16, draft-vidya-ipsec-failover-ps goal 6).
"""
import hashlib
import hmac
import io
import os
import random
import signal
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, error, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from rserpool import cli
from rserpool.asap.pool_user import PoolElementInfo
from rserpool.codes import ASAP_PPID, PolicyType
from rserpool.examples import transfer
from rserpool.pu import PoolClientEndpoint, PoolUser
from rserpool.session import CookieSealer, Keyring, load_keyring
from rserpool.session.core import (
    CookieIndication,
    CookieRefused,
    Deliver,
    PESessionCore,
    SendClose,
)
from rserpool.transport.enhanced import PESessionFactory, PoolSession
from rserpool.session.sealing import (
    ALTERED,
    EXPIRED,
    FORGED,
    MALFORMED,
    MAX_COOKIE_SIZE,
    OTHER_POOL,
    REASONS,
    UNKNOWN_KEY,
    CookieRejected,
    CookieTooLarge,
    KeyFileError,
    pool_tag,
)
from rserpool.transport import mux
from rserpool.wire import CookieEcho, Policy, TCPTransport, decode, encode

from tests.helpers import PESessionPeer, eventually, write_keys
from tests.test_cli_pool import RegistrarMixin

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
KEY_3 = bytes(range(200, 232))
HANDLE = b"TransferPool"
NOW = 1700000000.0


def counting(n):
    """
    The fixed "randomness" of the known-answer vectors: 0, 1, 2, ...
    """
    return bytes(range(n))


def sealer(keys=((b"k1", KEY_1),), handle=HANDLE, lifetime=3600.0, urandom=os.urandom):
    return CookieSealer(Keyring(keys), handle, lifetime=lifetime, urandom=urandom)


def reason(testcase, sealer, cookie, now=NOW):
    with testcase.assertRaises(CookieRejected) as caught:
        sealer.open(cookie, now)
    return caught.exception.reason


class KnownAnswerTests(unittest.TestCase):
    """
    Fixed key, fixed nonce (injected randomness), fixed time: exact bytes.
    """

    #: key id "k1" = 00 01 .. 1f, pool "TransferPool", nonce 00 01 .. 17,
    #: sealed at 1700000000 s for 3600 s, state "hello".
    VECTOR_1 = bytes.fromhex(
        "a501026b31"                                        # mark, version, key id
        "2bf8c00a"                                          # pool tag
        "000102030405060708090a0b0c0d0e0f1011121314151617"  # salt, nonce
        "9bedfe08b3117f3005b3ccdc26"                        # expiry + state, encrypted
        "7b3c243757ea51ff47186679a6972015")                 # GCM tag

    def test_vector_1(self):
        s = sealer(urandom=counting)
        self.assertEqual(s.seal(b"hello", NOW), self.VECTOR_1)
        self.assertEqual(s.open(self.VECTOR_1, NOW + 3599.999), b"hello")

    def test_vector_2(self):
        # Another key id, pool, lifetime and an empty state.
        s = sealer(keys=[("2024-06", KEY_2)], handle=b"EchoPool", lifetime=60,
                   urandom=lambda n: b"\xff" * n)
        cookie = s.seal(b"", 1234.5)
        self.assertEqual(cookie.hex(), self.rebuild(KEY_2, b"2024-06", b"EchoPool", b"\xff" * 24,
                                                    1294500, b"").hex())
        self.assertEqual(len(cookie), 2 + 1 + 7 + 4 + 24 + 8 + 16)
        self.assertEqual(s.open(cookie, 1294.4), b"")

    def rebuild(self, key, key_id, handle, nonce, expires_ms, state):
        # The layout of the module's description, from the primitives.
        header = (b"\xa5\x01" + bytes([len(key_id)]) + key_id
                  + hashlib.sha256(b"rserpool pool tag\x00" + handle).digest()[:4] + nonce)
        subkey = hmac.new(key, b"rserpool sealed cookie v1\x00" + nonce[:12], "sha256").digest()
        return header + AESGCM(subkey).encrypt(
            nonce[12:], struct.pack("!Q", expires_ms) + state, header + handle)

    def test_layout(self):
        self.assertEqual(self.rebuild(KEY_1, b"k1", HANDLE, counting(24),
                                      int((NOW + 3600) * 1000), b"hello"), self.VECTOR_1)
        self.assertEqual(pool_tag(HANDLE), self.VECTOR_1[5:9])


class RoundTripTests(unittest.TestCase):
    def test_round_trip(self):
        s = sealer()
        for state in (b"", b"x", bytes(range(256)) * 4, b"\x00" * s.max_state_size):
            self.assertEqual(s.open(s.seal(state, NOW), NOW + 1), state)

    def test_shortest_lifetime_at_a_whole_millisecond(self):
        # (1.0 + 0.001) * 1000 is 1000.9999999999999 in floats: the cookie
        # must still live its millisecond (found by hypothesis).
        s = sealer(lifetime=0.001)
        self.assertEqual(s.open(s.seal(b"x", 1.0), 1.0), b"x")
        self.assertRaises(CookieRejected, s.open, s.seal(b"x", 1.0), 1.001)

    def test_bytes_like(self):
        s = sealer()
        cookie = s.seal(bytearray(b"abc"), NOW)
        self.assertEqual(s.open(memoryview(cookie), NOW), b"abc")
        self.assertRaises(TypeError, s.seal, "text", NOW)

    def test_fresh_nonce_each_time(self):
        s = sealer()
        self.assertNotEqual(s.seal(b"same", NOW), s.seal(b"same", NOW))

    def test_state_is_hidden(self):
        # Confidentiality: the state does not show in the cookie.
        cookie = sealer().seal(b"secret-file-name.tar", NOW)
        self.assertNotIn(b"secret", cookie)

    def test_another_pe_of_the_pool_opens(self):
        a, b = sealer(), sealer()
        self.assertEqual(b.open(a.seal(b"state", NOW), NOW + 10), b"state")

    def test_size_bound(self):
        s = sealer()
        cookie = s.seal(b"\x00" * s.max_state_size, NOW)
        self.assertEqual(len(cookie), MAX_COOKIE_SIZE)
        self.assertLess(MAX_COOKIE_SIZE + 8, 0xFFFF)  # fits the ASAP TLV and message
        self.assertRaises(CookieTooLarge, s.seal, b"\x00" * (s.max_state_size + 1), NOW)
        # And a cookie that long travels in ASAP Cookie and Cookie Echo.
        self.assertEqual(decode(encode(CookieEcho(cookie)), "asap"), CookieEcho(cookie))

    def test_settings_checked(self):
        self.assertRaises(ValueError, sealer, lifetime=0)
        self.assertRaises(ValueError, sealer, lifetime=float("inf"))
        self.assertRaises(ValueError, sealer, handle=b"")
        self.assertRaises(TypeError, CookieSealer, {b"k1": KEY_1}, HANDLE)
        self.assertRaises(ValueError, sealer(urandom=lambda n: b"short").seal, b"", NOW)
        self.assertEqual(sealer(handle="TransferPool").pool_handle, HANDLE)


class RefusalTests(unittest.TestCase):
    """
    Each reason a cookie is refused.
    """

    def setUp(self):
        self.sealer = sealer()
        self.cookie = self.sealer.seal(b"state", NOW)

    def test_reasons_are_named(self):
        self.assertEqual(set(REASONS), {"forged", "altered", "expired", "other pool",
                                        "unknown key", "malformed"})
        e = CookieRejected(EXPIRED, "expired 3 s ago")
        self.assertEqual(str(e), "cookie refused (expired): expired 3 s ago")

    def test_forged_random_bytes(self):
        rng = random.Random(2016)
        for size in (0, 1, 2, 40, 60, 200, 4096):
            data = bytes(rng.getrandbits(8) for _ in range(size))
            if data[:1] == b"\xa5":
                data = b"\x00" + data[1:]
            self.assertEqual(reason(self, self.sealer, data), FORGED)

    def test_forged_old_hmac_cookie(self):
        # What the transfer example used to set (HMAC-SHA256 + "T1" + name).
        body = b"T1pattern-100"
        old = hmac.new(b"k", body, "sha256").digest() + body
        self.assertIn(reason(self, self.sealer, old), (FORGED, MALFORMED))

    def test_forged_without_the_key(self):
        # The format right, the key not: made by someone who lacks it.
        attacker = sealer(keys=[(b"k1", KEY_3)])
        self.assertEqual(reason(self, self.sealer, attacker.seal(b"state", NOW)), ALTERED)

    def test_altered_each_byte(self):
        # Every byte flipped, in every way that matters: refused; the reason
        # says which part was touched.
        for i in range(len(self.cookie)):
            for mask in (0x01, 0x80, 0xFF):
                altered = bytearray(self.cookie)
                altered[i] ^= mask
                why = reason(self, self.sealer, bytes(altered))
                if i == 0:
                    self.assertEqual(why, FORGED)
                elif i == 1:
                    self.assertEqual(why, MALFORMED)
                elif i == 2:
                    # a key id length that shifts the fields after it
                    self.assertIn(why, (MALFORMED, OTHER_POOL))
                elif i in (3, 4):
                    self.assertEqual(why, UNKNOWN_KEY)
                elif 5 <= i < 9:
                    self.assertEqual(why, OTHER_POOL)
                else:
                    self.assertEqual(why, ALTERED, (i, mask))

    def test_expired(self):
        self.assertEqual(self.sealer.open(self.cookie, NOW + 3599.999), b"state")
        self.assertEqual(reason(self, self.sealer, self.cookie, NOW + 3600), EXPIRED)
        self.assertEqual(reason(self, self.sealer, self.cookie, NOW + 10 ** 6), EXPIRED)

    def test_other_pool(self):
        # Same keys, another pool: refused, and said so.
        other = sealer(handle=b"OtherPool")
        self.assertEqual(reason(self, other, self.cookie), OTHER_POOL)
        self.assertEqual(reason(self, self.sealer, other.seal(b"state", NOW)), OTHER_POOL)

    def test_other_pool_with_the_same_tag(self):
        # The pool tag only names the reason; the binding is the
        # authenticated handle: a cookie whose tag is made to match still
        # fails.
        other = sealer(handle=b"OtherPool", urandom=counting)
        cookie = bytearray(other.seal(b"state", NOW))
        cookie[5:9] = pool_tag(HANDLE)
        self.assertEqual(reason(self, self.sealer, bytes(cookie)), ALTERED)

    def test_unknown_key(self):
        other = sealer(keys=[(b"k9", KEY_1)])
        self.assertEqual(reason(self, self.sealer, other.seal(b"state", NOW)), UNKNOWN_KEY)

    def test_truncated(self):
        for n in range(len(self.cookie)):
            self.assertIn(reason(self, self.sealer, self.cookie[:n]), (FORGED, MALFORMED, ALTERED))
        # Short of the smallest cookie: malformed; longer: authentication.
        self.assertEqual(reason(self, self.sealer, self.cookie[:40]), MALFORMED)
        self.assertEqual(reason(self, self.sealer, self.cookie[:-1]), ALTERED)

    def test_oversized(self):
        self.assertEqual(reason(self, self.sealer, self.cookie + b"\x00" * MAX_COOKIE_SIZE),
                         MALFORMED)
        self.assertEqual(reason(self, self.sealer, b"\xa5" * (MAX_COOKIE_SIZE + 1)), MALFORMED)

    def test_unknown_version_and_key_id_length(self):
        self.assertEqual(reason(self, self.sealer, b"\xa5\x02" + self.cookie[2:]), MALFORMED)
        self.assertEqual(reason(self, self.sealer, b"\xa5\x01\x00" + self.cookie[3:]), MALFORMED)
        self.assertEqual(reason(self, self.sealer, b"\xa5\x01\x21" + self.cookie[3:]), MALFORMED)

    def test_not_bytes(self):
        for value in (None, "text", 42, [1, 2]):
            self.assertEqual(reason(self, self.sealer, value), MALFORMED)

    def test_detail_names_no_secret(self):
        with self.assertRaises(CookieRejected) as caught:
            sealer(keys=[(b"k1", KEY_2)]).open(self.cookie, NOW)
        self.assertNotIn(KEY_1.hex(), caught.exception.detail)
        self.assertNotIn("state", caught.exception.detail)


class RotationTests(unittest.TestCase):
    def test_previous_key_opens(self):
        old = sealer()
        cookie = old.seal(b"in flight", NOW)
        new = CookieSealer(old.keyring.rotated(b"k2", KEY_2), HANDLE)
        self.assertEqual(new.keyring.ids, (b"k2", b"k1"))
        self.assertEqual(new.open(cookie, NOW + 1), b"in flight")
        # New cookies are sealed with the new key.
        self.assertEqual(new.seal(b"x", NOW)[3:5], b"k2")

    def test_dropped_key_does_not(self):
        s = sealer()
        cookie = s.seal(b"in flight", NOW)
        s.use(s.keyring.rotated(b"k2", KEY_2))
        s.use(s.keyring.rotated(b"k3", KEY_3))  # keep=1: k1 is dropped
        self.assertEqual(s.keyring.ids, (b"k3", b"k2"))
        self.assertEqual(reason(self, s, cookie), UNKNOWN_KEY)
        s.use(Keyring([(b"k1", KEY_2)]))  # an id used again, with another key
        self.assertEqual(reason(self, s, cookie), ALTERED)

    def test_pool_rotation_without_breaking_sessions(self):
        # Three PEs updated one after the other at each step: at every
        # moment, every cookie any of them sealed opens at every other.
        pes = [sealer() for _ in range(3)]
        cookies = []

        def check():
            for pe in pes:
                cookies.append(pe.seal(b"state", NOW))
            for pe in pes:
                for cookie in cookies:
                    self.assertEqual(pe.open(cookie, NOW), b"state")

        steps = [lambda k: k.adding(b"k2", KEY_2),   # 1: the new key opens everywhere
                 lambda k: k.promoting(b"k2")]       # 2: then seals everywhere
        for step in steps:
            for pe in pes:
                pe.use(step(pe.keyring))
                check()
        self.assertEqual(pes[0].keyring.ids, (b"k2", b"k1"))
        # 3: once every cookie sealed under k1 has expired, k1 goes.
        later = NOW + 3600
        fresh = [pe.seal(b"state", later) for pe in pes]
        for pe in pes:
            pe.use(pe.keyring.dropping(b"k1"))
            for cookie in fresh:
                self.assertEqual(pe.open(cookie, later), b"state")
        self.assertEqual(reason(self, pes[0], cookies[0], later), UNKNOWN_KEY)

    def test_keyring_rules(self):
        ring = Keyring([(b"a", KEY_1), ("b", KEY_2)])
        self.assertEqual(ring.current_id, b"a")
        self.assertIn(b"b", ring)
        self.assertEqual(len(ring), 2)
        self.assertIsNone(ring.key(b"c"))
        self.assertRaises(ValueError, ring.dropping, b"a")
        self.assertRaises(ValueError, ring.promoting, b"c")
        self.assertRaises(ValueError, ring.adding, b"b", KEY_3)
        self.assertEqual(ring.rotated(b"c", KEY_3, keep=2).ids, (b"c", b"a", b"b"))
        self.assertRaises(ValueError, Keyring, [])
        self.assertRaises(ValueError, Keyring, [(b"a", KEY_1[:16])])
        self.assertRaises(ValueError, Keyring, [(b"with space", KEY_1)])
        self.assertRaises(ValueError, Keyring, [(b"x" * 33, KEY_1)])
        self.assertRaises(ValueError, Keyring, [("\u00e9", KEY_1)])
        # Keys never show in a repr (logs).
        self.assertEqual(repr(ring), "<Keyring current=a previous=[b]>")
        self.assertNotIn(KEY_1.hex(), repr(ring))


class KeyFileTests(unittest.TestCase):
    def write(self, text, mode=0o600):
        return write_keys(self, text, mode)

    def test_parse(self):
        text = "# the first key seals\n\nk2  {}\n  k1\t{}  \n".format(KEY_2.hex(), KEY_1.hex().upper())
        self.assertEqual(Keyring.parse(text), Keyring([(b"k2", KEY_2), (b"k1", KEY_1)]))

    def test_errors_name_file_and_line(self):
        cases = [
            ("k1\n", "f, line 1: expected KEYID HEXKEY"),
            ("# c\nk1 {} extra\n".format(KEY_1.hex()), "f, line 2: expected KEYID HEXKEY"),
            ("k1 xyz\n", "f, line 1: the key is not hexadecimal"),
            ("k1 {}\n".format(KEY_1[:16].hex()),
             "f, line 1: the key has 16 bytes; a cookie key has 32 (64 hexadecimal digits)"),
            ("k1 {}\nk1 {}\n".format(KEY_1.hex(), KEY_2.hex()), "f, line 2: key id k1 given twice"),
            ("{} {}\n".format("x" * 33, KEY_1.hex()), "f, line 1: a key id has 1 to 32 bytes"),
            ("# nothing\n", "f: no keys"),
        ]
        for text, message in cases:
            with self.assertRaises(KeyFileError) as caught:
                Keyring.parse(text, "f")
            self.assertTrue(str(caught.exception).startswith(message), str(caught.exception))

    def test_load(self):
        path = self.write("k1 {}\n".format(KEY_1.hex()))
        self.assertEqual(load_keyring(path), Keyring([(b"k1", KEY_1)]))

    def test_world_readable_refused(self):
        path = self.write("k1 {}\n".format(KEY_1.hex()), 0o644)
        with self.assertRaises(KeyFileError) as caught:
            load_keyring(path)
        self.assertIn(path, str(caught.exception))
        self.assertIn("chmod o-rwx", str(caught.exception))

    def test_missing_and_binary(self):
        self.assertRaises(KeyFileError, load_keyring, self.mktemp())
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"k1 \xff\n")
        os.chmod(path, 0o600)
        self.assertRaises(KeyFileError, load_keyring, path)

    def test_reload(self):
        path = self.write("k1 {}\n".format(KEY_1.hex()))
        s = CookieSealer.from_file(path, HANDLE)
        cookie = s.seal(b"state", NOW)
        self.assertFalse(s.reload(if_changed=True))
        with open(path, "w") as f:
            f.write("k2 {}\nk1 {}\n".format(KEY_2.hex(), KEY_1.hex()))
        os.utime(path, ns=(0, 10 ** 9))
        self.assertTrue(s.reload(if_changed=True))
        self.assertEqual(s.keyring.ids, (b"k2", b"k1"))
        self.assertEqual(s.open(cookie, NOW), b"state")
        # A broken file leaves the keys as they were.
        with open(path, "w") as f:
            f.write("k3 nothex\n")
        self.assertRaises(KeyFileError, s.reload)
        self.assertEqual(s.keyring.ids, (b"k2", b"k1"))
        self.assertRaises(ValueError, sealer().reload)


class PropertyTests(unittest.TestCase):
    """
    Whatever the bytes: C{open} raises L{CookieRejected} and nothing else,
    and nothing opens without the key.
    """

    sealer = sealer()
    genuine = sealer.seal(b"state", NOW)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=400))
    def test_no_bytes_open(self, data):
        with self.assertRaises(CookieRejected) as caught:
            self.sealer.open(data, NOW)
        self.assertIn(caught.exception.reason, REASONS)

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from([b"k1", b"k2", b"k", b"\x00"]), st.sampled_from([pool_tag(HANDLE), b"AAAA"]),
           st.binary(max_size=300), st.integers(0, 255))
    def test_well_formed_headers_do_not_open(self, key_id, tag, tail, length):
        # Past the cheap checks, into the AEAD: still refused.
        header = b"\xa5\x01" + bytes([len(key_id) if length % 2 else length]) + key_id + tag
        with self.assertRaises(CookieRejected) as caught:
            self.sealer.open(header + tail, NOW)
        self.assertIn(caught.exception.reason, REASONS)

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_mutations_do_not_open(self, data):
        cookie = bytearray(self.genuine)
        places = data.draw(st.sets(st.integers(0, len(cookie) - 1), min_size=1, max_size=4))
        for i in places:
            cookie[i] ^= data.draw(st.integers(1, 255))
        self.assertRaises(CookieRejected, self.sealer.open, bytes(cookie), NOW)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2000), st.floats(0, 2e9), st.floats(0.001, 1e6))
    def test_round_trip(self, state, now, lifetime):
        s = sealer(lifetime=lifetime)
        cookie = s.seal(state, now)
        self.assertLessEqual(len(cookie), MAX_COOKIE_SIZE)
        self.assertEqual(s.open(cookie, now), state)
        self.assertRaises(CookieRejected, s.open, cookie, now + lifetime + 0.001)


class CoreTests(unittest.TestCase):
    """
    L{PESessionCore} with a sealer.
    """

    def setUp(self):
        self.sealer = sealer()
        self.core = PESessionCore(self.sealer)

    def test_set_cookie_seals(self):
        frame = self.core.set_cookie(b"state", NOW)
        sealed = decode(frame.payload, "asap").cookie
        self.assertEqual(self.sealer.open(sealed, NOW), b"state")

    def test_cookie_echo_opened(self):
        cookie = self.sealer.seal(b"state", NOW)
        events = self.core.received(encode(CookieEcho(cookie)), ASAP_PPID, now=NOW)
        self.assertEqual(events, [CookieIndication(b"state")])
        self.assertEqual(self.core.cookie_received, b"state")

    def test_refused(self):
        (event,) = self.core.received(encode(CookieEcho(b"forged")), ASAP_PPID, now=NOW)
        self.assertIsInstance(event, CookieRefused)
        self.assertEqual(event.rejection.reason, FORGED)
        self.assertIsNone(self.core.cookie_received)
        self.assertEqual(self.core.refuse(), [SendClose()])
        self.assertEqual(self.core.received(b"data", 0, now=NOW), [])

    def test_time_needed(self):
        self.assertRaises(TypeError, self.core.set_cookie, b"state")
        self.assertRaises(TypeError, self.core.received, encode(CookieEcho(b"c")), ASAP_PPID)

    def test_without_sealer_unchanged(self):
        core = PESessionCore()
        self.assertEqual(core.received(encode(CookieEcho(b"c")), ASAP_PPID),
                         [CookieIndication(b"c")])
        self.assertEqual(core.received(b"d", 0), [Deliver(b"d")])


class App(Protocol):
    def __init__(self):
        self.events = []

    def cookieReceived(self, state):
        self.events.append(("cookie", state))
        self.transport.set_cookie(state + b"+1")

    def dataReceived(self, data):
        self.events.append(("data", data))

    def connectionLost(self, reason):
        self.events.append(("lost", reason.type.__name__))


class HookedApp(App):
    def cookieRefused(self, rejection):
        self.events.append(("refused", rejection.reason))


class PESessionSealerTests(PESessionPeer, unittest.TestCase):
    """
    L{PESessionFactory}C{(sealer=...)} over a L{StringTransport}: one line
    of the PE's code seals its cookies.
    """

    def start(self, app):
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.sealer = sealer()
        self.app = app
        self.connect_pe_session(app, self.clock, heartbeat_interval=None, sealer=self.sealer)

    def present(self, cookie):
        self.peer.send(encode(CookieEcho(cookie)), ASAP_PPID)
        self.peer.send(b"after", 0)
        self.proto.dataReceived(self.peer.data_to_send())

    def test_genuine(self):
        self.start(App())
        self.present(self.sealer.seal(b"n=1", NOW - 10))
        self.assertEqual(self.app.events, [("cookie", b"n=1"), ("data", b"after")])
        ((ppid, payload),) = self.frames()
        self.assertEqual(ppid, ASAP_PPID)
        self.assertEqual(self.sealer.open(decode(payload, "asap").cookie, NOW), b"n=1+1")

    def test_refused_closes(self):
        # Without cookieRefused the session ends: the application sees no
        # state and none of the PU's data; the PU gets the close, no reason.
        self.start(App())
        self.present(self.sealer.seal(b"n=1", NOW - 3601))
        self.assertEqual(self.app.events, [])
        self.assertEqual(self.frames(), [mux.CloseReceived()])
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.app.events, [("lost", "ConnectionDone")])

    def test_refused_hook(self):
        self.start(HookedApp())
        self.present(b"forged")
        self.assertEqual(self.app.events, [("refused", FORGED), ("data", b"after")])
        self.assertFalse(self.transport.disconnecting)


class Counter(Protocol):
    """
    A PE application keeping a count in its cookie (plain state: the
    session seals it).
    """

    count = 0

    def cookieReceived(self, state):
        self.count = int(state)

    def dataReceived(self, data):
        self.count += 1
        self.transport.set_cookie(b"%d" % self.count)
        self.transport.write(b"%d" % self.count)


class Asker(Protocol):
    def __init__(self):
        self.replies = []
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.replies.append(int(data))

    def connectionLost(self, reason):
        self.lost.callback(reason.type)


class SessionSealerLoopbackTests(unittest.TestCase):
    """
    C{session_options={"sealer": ...}}'s factory on loopback, PU and PEs:
    the state survives a failover; an altered cookie ends the session on
    purpose at the next PE (no further failover).
    """

    timeout = 20

    @defer.inlineCallbacks
    def exchange(self, alter):
        keyring = Keyring([(b"k1", KEY_1)])
        factories, infos = [], []
        for n in (1, 2, 3):
            factory = PESessionFactory(Factory.forProtocol(Counter), reactor, heartbeat_interval=None,
                                       sealer=CookieSealer(keyring, HANDLE))
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            factories.append(factory)
            infos.append(PoolElementInfo(HANDLE, n, TCPTransport(port.getHost().port, ("127.0.0.1",)),
                                         Policy.make(PolicyType.ROUND_ROBIN)))
        asker = Asker()
        session = PoolSession(reactor, None, HANDLE, Factory.forProtocol(lambda: asker),
                              candidates=infos, heartbeat_interval=None)
        yield session.connect()
        for _ in range(3):
            asker.transport.write(b"+")
        yield eventually(lambda: len(asker.replies) == 3, "three replies", step=0.01)
        sealed = session.core.cookie
        self.assertEqual(CookieSealer(keyring, HANDLE).open(sealed, reactor.seconds()), b"3")
        if alter:
            session.core.cookie = sealed[:-1] + bytes([sealed[-1] ^ 1])
        for s in list(factories[0].sessions):
            s.link.transport.abortConnection()
        if not alter:
            yield eventually(lambda: session.failovers == 1 and session.link is not None,
                             "the failover to the next PE", step=0.01)
            asker.transport.write(b"+")
            yield eventually(lambda: len(asker.replies) == 4, "the fourth reply", step=0.01)
            asker.transport.loseConnection()
        # Altered: the next PE refuses the Cookie Echo and ends the session.
        reason = yield asker.lost
        yield eventually(lambda: session.link is None and not any(f.sessions for f in factories),
                         "both sides' sessions to close", step=0.01)
        return asker, session, reason

    @defer.inlineCallbacks
    def test_state_survives_failover(self):
        asker, session, reason = yield self.exchange(alter=False)
        self.assertEqual(asker.replies, [1, 2, 3, 4])
        self.assertEqual(session.history, [1, 2])

    @defer.inlineCallbacks
    def test_rfc5355_2_16_altered_cookie_ends_the_session(self):
        asker, session, reason = yield self.exchange(alter=True)
        self.assertEqual(asker.replies, [1, 2, 3])
        self.assertIs(reason, error.ConnectionDone)
        self.assertEqual(session.history, [1, 2])  # the PU did not fail over again
        self.assertEqual(session.failovers, 1)


# -- the transfer example -------------------------------------------------


class TransferCookieEchoTests(unittest.TestCase):
    """
    The transfer example on loopback: a pool user served by PE A fails over
    to PE B, presenting at Cookie Echo the cookie A set, or one an attacker
    made of it.  RFC 5355 section 2.16: "the PE could choose to sign and/or
    encrypt the cookie"; the PEs of the pool share the keys.
    """

    timeout = 20
    SIZE = 120000

    def setUp(self):
        self.keyring = Keyring([(b"k2", KEY_2), (b"k1", KEY_1)])
        self.servers = []

    def pe(self, handle=HANDLE):
        app = transfer.server_factory(sealer=CookieSealer(self.keyring, handle), chunk_size=1024,
                                      chunk_delay=0.005)
        build = app.buildProtocol

        def record(addr):
            server = build(addr)
            self.servers.append(server)
            return server

        app.buildProtocol = record
        factory = PESessionFactory(app, reactor, heartbeat_interval=None)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port

    @defer.inlineCallbacks
    def fail_over(self, present=None):
        """
        Fetch through A, kill A's session mid-transfer, let the PU fail over
        to B with C{present(cookie)} instead of A's cookie.

        @return: the data, or the failure, and B's server protocol.
        """
        (a, a_port), (b, b_port) = self.pe(), self.pe()
        infos = [PoolElementInfo(HANDLE, n, TCPTransport(port.getHost().port, ("127.0.0.1",)),
                                 Policy.make(PolicyType.ROUND_ROBIN))
                 for n, port in ((1, a_port), (2, b_port))]
        client_factory = transfer.TransferClientFactory("pattern-%d" % self.SIZE)
        session = PoolSession(reactor, None, HANDLE, client_factory, candidates=infos,
                              heartbeat_interval=None, attempts=2)
        client = yield session.connect()
        yield eventually(lambda: len(client.received) > 20000, "20,000 bytes from A", step=0.01)
        genuine = session.core.cookie
        self.assertIsNotNone(genuine)
        if present is not None:
            session.core.cookie = present(genuine)
        before = len(client.received)
        for s in list(a.sessions):
            s.link.transport.abortConnection()
        try:
            result = yield client_factory.done
        except Exception as e:
            result = e
        yield eventually(lambda: session.link is None and not a.sessions and not b.sessions,
                         "the sessions at the PU, A and B to close", step=0.01)
        self.assertEqual(session.history, [1, 2])
        self.before = before
        self.client = client
        return result, self.servers[-1]

    @defer.inlineCallbacks
    def refused(self, present, why):
        result, server = yield self.fail_over(present)
        # The PU hears that the cookie was bad, never why; B served nothing.
        self.assertIsInstance(result, RuntimeError)
        self.assertEqual(str(result), "ERR bad cookie")
        self.assertLess(len(self.client.received), self.SIZE)
        self.assertEqual(server.cookie_refused.reason, why)
        self.assertIsNone(server.resumed_from_cookie)
        self.assertIsNone(server.source)
        self.assertEqual(server.offset, 0)

    @defer.inlineCallbacks
    def test_rfc5355_2_16_genuine_cookie_resumes(self):
        result, server = yield self.fail_over()
        self.assertEqual(result, transfer.pattern(self.SIZE))
        self.assertEqual(server.resumed_from_cookie, b"pattern-%d" % self.SIZE)
        self.assertIsNone(server.cookie_refused)
        self.assertLess(self.before, self.SIZE)

    def test_rfc5355_2_16_forged_cookie_refused(self):
        return self.refused(lambda c: bytes(random.Random(1).getrandbits(8) & 0xFE for _ in c),
                            FORGED)

    def test_rfc5355_2_16_forged_with_another_key_refused(self):
        forger = CookieSealer(Keyring([(b"k2", KEY_3)]), HANDLE)
        return self.refused(lambda c: forger.seal(b"T1pattern-%d" % self.SIZE, reactor.seconds()),
                            ALTERED)

    def test_rfc5355_2_16_altered_cookie_refused(self):
        def alter(cookie):
            cookie = bytearray(cookie)
            cookie[-20] ^= 0x01
            return bytes(cookie)

        return self.refused(alter, ALTERED)

    def test_rfc5355_2_16_expired_cookie_refused(self):
        # Sealed with the pool's own key, an hour and a second ago.
        old = CookieSealer(self.keyring, HANDLE)
        return self.refused(
            lambda c: old.seal(b"T1pattern-%d" % self.SIZE, reactor.seconds() - 3601), EXPIRED)

    def test_rfc5355_2_16_other_pool_cookie_refused(self):
        # The same keys serve another pool: its cookies do not open here.
        other = CookieSealer(self.keyring, b"OtherPool")
        return self.refused(lambda c: other.seal(b"T1pattern-%d" % self.SIZE, reactor.seconds()),
                            OTHER_POOL)

    def test_rfc5355_2_16_dropped_key_refused(self):
        gone = CookieSealer(Keyring([(b"k0", KEY_3)]), HANDLE)
        return self.refused(lambda c: gone.seal(b"T1pattern-%d" % self.SIZE, reactor.seconds()),
                            UNKNOWN_KEY)


class TransferServerTests(unittest.TestCase):
    """
    The transfer PE's cookies on a L{StringTransport} and a L{task.Clock}.
    """

    class Transport(StringTransport):
        def __init__(self):
            super().__init__()
            self.cookies = []

        def set_cookie(self, cookie):
            self.cookies.append(cookie)

    def start(self, **options):
        self.clock = task.Clock()
        self.clock.advance(NOW)
        factory = transfer.server_factory(clock=self.clock, chunk_size=100, **options)
        server = factory.buildProtocol(None)
        transport = self.Transport()
        server.makeConnection(transport)
        return factory, server, transport

    def test_fresh_cookie_before_expiry(self):
        # A long transfer: the PE seals a new cookie every half lifetime, so
        # the PU never holds an expired one.
        factory, server, transport = self.start(cookie_lifetime=10.0, chunk_delay=1.0)
        server.dataReceived(b"GET pattern-100000 0")
        self.assertEqual(len(transport.cookies), 1)
        for _ in range(30):
            self.clock.advance(1.0)
        self.assertEqual(len(transport.cookies), 7)
        name = factory.open_cookie(transport.cookies[-1])
        self.assertEqual(name, b"T1pattern-100000")
        server.connectionLost(None)

    def test_resumed_pe_sets_its_own_cookie(self):
        factory, server, transport = self.start()
        server.cookieReceived(factory.seal_cookie(b"T1pattern-500"))
        self.assertEqual(server.resumed_from_cookie, b"pattern-500")
        self.assertEqual(len(transport.cookies), 1)
        server.dataReceived(b"RESUME 400")
        self.assertIn(transfer.pattern(500, 400, 100), transport.value())

    def test_state_of_another_application_refused(self):
        factory, server, transport = self.start()
        server.cookieReceived(factory.seal_cookie(b"XXpattern-500"))
        self.assertEqual(server.cookie_refused.reason, MALFORMED)
        self.assertEqual(transport.value(), b"ERR bad cookie")
        self.assertTrue(transport.disconnecting)

    def test_passphrase_functions(self):
        cookie = transfer.make_cookie(b"k", b"file", now=NOW)
        self.assertEqual(transfer.open_cookie(b"k", cookie, now=NOW), b"file")
        self.assertIsNone(transfer.open_cookie(b"k", cookie, now=NOW + 3600))
        self.assertIsNone(transfer.open_cookie(b"k", cookie, now=NOW, pool_handle=b"Other"))

    def test_key_file_read_again(self):
        # Rotation while the PE runs: the file is looked at once a second.
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("k1 {}\n".format(KEY_1.hex()))
        os.chmod(path, 0o600)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        factory, server, transport = self.start(cookie_keys=path)
        old = factory.seal_cookie(b"T1a")
        with open(path, "w") as f:
            f.write("k2 {}\nk1 {}\n".format(KEY_2.hex(), KEY_1.hex()))
        os.utime(path, ns=(0, 10 ** 9))
        self.assertEqual(factory.seal_cookie(b"T1b")[3:5], b"k1")  # not a second yet
        self.clock.advance(1.0)
        self.assertEqual(factory.seal_cookie(b"T1b")[3:5], b"k2")
        self.assertEqual(factory.open_cookie(old), b"T1a")
        # A broken file is said once; the keys stay.
        with open(path, "w") as f:
            f.write("broken\n")
        os.utime(path, ns=(0, 2 * 10 ** 9))
        for _ in range(3):
            self.clock.advance(1.0)
            self.assertEqual(factory.seal_cookie(b"T1c")[3:5], b"k2")
        said = [formatEvent(e) for e in events if "transfer" in e.get("log_namespace", "")
                and e["log_level"] == LogLevel.warn]
        self.assertEqual(said, ["transfer: {}, line 1: expected KEYID HEXKEY; the cookie keys "
                                "stay as they were".format(path)])


class TransferCommandTests(RegistrarMixin, unittest.TestCase):
    """
    C{rserpool pe --cookie-keys FILE transfer}: PE processes sharing a key
    file; the one serving is killed; the next resumes from the cookie.
    """

    timeout = 60

    def keys(self, text, mode=0o600):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_bad_key_file(self):
        err = io.StringIO()
        path = self.keys("k1 {}\n".format(KEY_1.hex()), 0o644)
        code = cli.main(["pe", "--handle", "TransferPool", "--cookie-keys", path, "transfer"],
                        io.StringIO(), err)
        self.assertEqual(code, 2)
        self.assertEqual(err.getvalue(), "rserpool pe: cookie key file {} is open to every user "
                                         "of the host: chmod o-rwx {}\n".format(path, path))

    @defer.inlineCallbacks
    def test_sigkill_with_key_file(self):
        path = self.keys("k2 {}\nk1 {}\n".format(KEY_2.hex(), KEY_1.hex()))
        yield self.start_registrar()
        procs = {}
        for i in range(2):
            pe_id = 0x2000 + i
            procs[pe_id] = self.start_pe("transfer", "TransferPool", "--identifier", "%08x" % pe_id,
                                         "--cookie-keys", path, "--chunk-size", "2048",
                                         "--chunk-delay", "0.01")
        for proc in procs.values():
            yield proc.wait_for(b"registered")
        pu = PoolUser(reactor, registrars=[self.asap])
        self.addCleanup(pu.close)
        factory = transfer.TransferClientFactory("pattern-200000")
        client = yield PoolClientEndpoint(reactor, pu, "TransferPool").connect(factory)
        session = client.transport._session
        yield eventually(lambda: len(client.received) > 40000, "40,000 bytes of the transfer",
                         step=0.01)
        # The cookie the PU holds is sealed under the file's first key.
        self.assertEqual(CookieSealer(load_keyring(path), HANDLE).open(
            session.core.cookie, reactor.seconds()), b"T1pattern-200000")
        procs[session.pe.identifier].kill(signal.SIGKILL)
        data = yield factory.done
        self.assertEqual(data, transfer.pattern(200000))
        self.assertEqual(client.failovers, 1)
        yield eventually(lambda: session.link is None, "the session to close", step=0.01)
