#!/usr/bin/env python3
"""
Fuzzing the network input paths (issue #14, "totality, proven by
fuzzing"): any bytes a peer sends give a message or a typed error, every
answer encodes, every log line stays short, and nothing raises.

Four targets, fed seeded pseudo-random inputs:

 - C{decode}: L{rserpool.wire.decode} of mutated valid messages (bits
   flipped, bytes set, inserted, deleted, copied, parameters re-typed,
   nested and spliced, length fields rewritten) and of random bytes, as
   ASAP and as ENRP.  A message that decodes must encode again and decode
   to itself; a L{ProtocolError} must not come from the codec's catch-all
   (every malformation has its own check).
 - C{stream}: L{rserpool.wire.StreamDecoder} fed streams of valid,
   mutated and random messages cut into random chunks: it yields messages
   and L{ProtocolError}s only, raises only L{ProtocolError} (and then for
   good), buffers at most one message, and the cutting does not change
   what comes out.
 - C{asap} and C{enrp}: a registrar (L{ASAPRegistrar} with its
   L{ENRPServer}) driven through fake connections by random sequences of
   connections, disconnections, time steps and messages (generated ones
   that mean something to the registrar, mutated and random ones), on its
   ASAP and its ENRP side.  Nothing may raise; every message the
   registrar sends must encode and decode; no log line may exceed
   L{MAX_LOG_LINE} characters nor carry a traceback.

One input is one byte string delivered: a message to C{decode} or to a
state machine, a whole stream to C{stream}.

usage: python3 bench/fuzz.py [--inputs N] [--seed S] [--jobs J]
       python3 bench/fuzz.py --replay FILE

Writes C{bench/results/fuzz.txt}; each crashing input is saved as JSON in
C{bench/results/fuzz-crashes/} (replay it with C{--replay}).  Exits 1 on
any crash.

The generators take their choices from a L{Chooser}: a seeded
C{random.Random} here, hypothesis in C{tests/test_fuzz.py}, which runs the
same targets with a small budget as part of the test suite.
"""
import argparse
import hashlib
import ipaddress
import json
import multiprocessing
import os
import platform
import random
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.logger import Logger, formatEvent  # noqa: E402

from rserpool.actions import Runner  # noqa: E402
from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig  # noqa: E402
from rserpool.asap.scope import Scope  # noqa: E402
from rserpool.codes import POLICY_FIELDS, ErrorCause  # noqa: E402
from rserpool.enrp.machine import ENRPConfig, ENRPServer  # noqa: E402
from rserpool.services import presence_from  # noqa: E402
from rserpool.tools.message_examples import EXAMPLES  # noqa: E402
from rserpool.interfaces import NotAvailable  # noqa: E402
from rserpool.wire import (  # noqa: E402
    ASAP,
    ENRP,
    ASAPError,
    BusinessCard,
    Cause,
    Cookie,
    CookieEcho,
    DCCPTransport,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    ENRPError,
    HandleResolution,
    HandleResolutionResponse,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    OperationError,
    Policy,
    PoolElement,
    Presence,
    ProtocolError,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    ServerAnnounce,
    ServerInformation,
    StreamDecoder,
    TakeoverServer,
    TCPTransport,
    UDPLiteTransport,
    UDPTransport,
    decode,
    echo,
    encode,
)

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
CRASHES = os.path.join(RESULTS, "fuzz-crashes")

#: The longest log line a peer's input may cause (characters).
MAX_LOG_LINE = 1000

TARGETS = ("decode", "stream", "asap", "enrp")
#: Share of the inputs each target gets in a run.
WEIGHTS = {"decode": 50, "stream": 10, "asap": 25, "enrp": 15}

OWN_ID = 0x0A0A0A0A
PEER_IDS = (0x10, 0x20, 0x30)
LOOP = ipaddress.ip_address("127.0.0.1")


class Crash(Exception):
    """
    A broken promise that is not an exception of the code under test: an
    answer that does not encode, a long log line, a traceback logged.
    """


# --------------------------------------------------------------------------
# Choices


class Chooser:
    """
    Where the generators take their decisions from.
    """

    def pick(self, n):
        """
        An integer in C{range(n)}.
        """
        raise NotImplementedError

    def blob(self, n):
        """
        Up to C{n} arbitrary bytes.
        """
        raise NotImplementedError

    def chance(self, percent):
        return self.pick(100) < percent

    def one(self, seq):
        return seq[self.pick(len(seq))]


class RandomChooser(Chooser):
    def __init__(self, rng):
        self.rng = rng

    def pick(self, n):
        return self.rng.randrange(n)

    def blob(self, n):
        return self.rng.randbytes(self.rng.randrange(n + 1))


# --------------------------------------------------------------------------
# The corpus: every message type, encoded, plus large and odd ones.


def _tlv(ptype, value):
    return struct.pack("!HH", ptype, 4 + len(value)) + value + b"\0" * (-len(value) % 4)


def _message(mtype, body, flags=0):
    return struct.pack("!BBH", mtype, flags, 4 + len(body)) + body


def _nested_pool_elements(depth):
    tlv = b""
    for _ in range(depth):
        tlv = _tlv(0x000A, struct.pack("!III", 1, 0, 0) + tlv)
    return tlv


def _corpus():
    small = [(p, encode(m)) for p, _, m in EXAMPLES]
    small += [
        # nesting and unknown parameters
        (ASAP, _message(1, _tlv(9, b"P") + _nested_pool_elements(40))),
        (ASAP, _message(5, _tlv(9, b"P") + _tlv(0xC077, b"ab") + _tlv(0x8077, b"")
                        + _tlv(0x4077, b"c"))),
        (ENRP, _message(5, b"\0\0\0\1\0\0\0\0" + _tlv(0xC001, b"abcd") * 3)),
    ]
    pe = EXAMPLES[0][2].pool_element
    many = SCTPTransport(7, ["10.0.0.%d" % (i % 250 + 1) for i in range(3000)], 1)
    most = SCTPTransport(7, ["10.0.0.%d" % (i % 250 + 1) for i in range(8000)], 1)
    big_pe = PoolElement(1, 0, 1000, many, pe.policy)
    large = [
        # up to 64 KiB: the answers that echo them must still fit
        (ASAP, encode(Registration(b"P", PoolElement(1, 0, 1000, most, pe.policy)))),
        (ASAP, encode(BusinessCard(b"P", [big_pe] * 2))),
        (ASAP, encode(ASAPError(OperationError([Cause(1, b"")] * 16000)))),
        (ASAP, encode(HandleResolution(b"x" * 65516))),
        (ENRP, encode(HandleUpdate(1, 2, 0, b"P", big_pe))),
        (ENRP, encode(Presence(1, 2, 3, ServerInformation(1, most)))),
        (ENRP, encode(ListResponse(1, 2, [ServerInformation(5, many)] * 2))),
        (ASAP, _message(1, _tlv(9, b"P") + _nested_pool_elements(4000))),
    ]
    return small, large


SMALL, LARGE = _corpus()
#: Every message type, encoded, and odd ones; then large ones.
CORPUS = SMALL + LARGE


def _from_corpus(c):
    # Large messages are slow to mutate and decode: one time in twenty.
    return c.one(LARGE) if c.chance(5) else c.one(SMALL)


# --------------------------------------------------------------------------
# Mutations: each is a function of (chooser, data, corpus) -> bytes.

_INTERESTING16 = (0, 1, 3, 4, 5, 7, 8, 12, 16, 0x7FFF, 0x8000, 0xFFFC, 0xFFFF)
_TYPES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF, 0x3F, 0x803F,
          0x0077, 0x4077, 0x8077, 0xC077)


def _flip(c, data):
    if not data:
        return data
    i = c.pick(len(data))
    return data[:i] + bytes([data[i] ^ (1 << c.pick(8))]) + data[i + 1:]


def _set_byte(c, data):
    if not data:
        return data
    i = c.pick(len(data))
    return data[:i] + bytes([c.one((0, 1, 0x7F, 0x80, 0xFF, c.pick(256)))]) + data[i + 1:]


def _set_u16(c, data):
    if len(data) < 2:
        return data
    i = c.pick(len(data) // 2) * 2
    v = c.one(_INTERESTING16 + (len(data) - i, len(data), c.pick(0x10000)))
    return data[:i] + struct.pack("!H", v & 0xFFFF) + data[i + 2:]


def _insert(c, data):
    i = c.pick(len(data) + 1)
    return data[:i] + c.blob(16) + data[i:]


def _delete(c, data):
    if not data:
        return data
    i = c.pick(len(data))
    return data[:i] + data[i + 1 + c.pick(min(16, len(data) - i)):]


def _copy(c, data):
    if not data:
        return data
    i = c.pick(len(data))
    j = i + c.pick(min(64, len(data) - i) + 1)
    k = c.pick(len(data) + 1)
    return data[:k] + data[i:j] + data[k:]


def _truncate(c, data):
    return data[:c.pick(len(data) + 1)]


def _tlv_offsets(data, start=4):
    """
    Where the body's parameters and those nested in them start (a guess:
    every 4-byte aligned place that looks like a TLV), among 128 places
    from C{start}.
    """
    out = []
    for i in range(start, min(len(data) - 3, start + 512), 4):
        t, n = struct.unpack_from("!HH", data, i)
        if 4 <= n <= len(data) - i and (t & 0x3FFF) < 0x40:
            out.append(i)
    return out


def _places(c, data):
    # In a large message, somewhere within it.
    return _tlv_offsets(data, 4 if len(data) <= 516 else 4 + c.pick(len(data) // 4) * 4)


def _retype(c, data):
    places = _places(c, data)
    if not places:
        return _set_u16(c, data)
    i = c.one(places)
    return data[:i] + struct.pack("!H", c.one(_TYPES)) + data[i + 2:]


def _relength(c, data):
    places = _places(c, data)
    if not places:
        return _set_u16(c, data)
    i = c.one(places) + 2
    (n,) = struct.unpack_from("!H", data, i)
    v = c.one((0, 3, 4, n - 1, n + 1, n + 4, n - 4, 0xFFFF, c.pick(0x10000)))
    return data[:i] + struct.pack("!H", v & 0xFFFF) + data[i + 2:]


def _wrap(c, data):
    # Put a parameter inside another (a transport, a Pool Element...).
    places = _places(c, data)
    if not places:
        return data
    i = c.one(places)
    n = (struct.unpack_from("!H", data, i + 2)[0] + 3) & ~3
    inner = data[i:i + n]
    head = c.one((b"", b"\0\0\0\0", b"\0\0\0\1\0\0\0\2\0\0\0\3"))
    return data[:i] + _tlv(c.one(_TYPES), head + inner) + data[i + n:]


def _splice(c, data):
    # A parameter of another message in place of one of ours.
    _, other = _from_corpus(c)
    theirs = _places(c, other)
    if not theirs:
        return data
    j = c.one(theirs)
    n = (struct.unpack_from("!H", other, j + 2)[0] + 3) & ~3
    i = c.one(_places(c, data) or [len(data)])
    return data[:i] + other[j:j + n] + data[i:]


def _header(c, data):
    if len(data) < 4:
        return data
    return bytes([c.one((c.pick(16), c.pick(256), data[0])), c.pick(256)]) + data[2:]


MUTATIONS = (_flip, _set_byte, _set_u16, _insert, _delete, _copy, _truncate,
             _retype, _relength, _wrap, _splice, _header)


def fix_length(data):
    """
    Make the message's length field say the message's length (so that the
    body is read), the way a sender that means harm would.
    """
    if len(data) < 4:
        return data
    return data[:2] + struct.pack("!H", min(len(data), 0xFFFF)) + data[4:]


def mutate(c, data):
    """
    One to four mutations, then usually a length field that fits.
    """
    for _ in range(1 + c.pick(4)):
        data = c.one(MUTATIONS)(c, data)
        if len(data) > 0xFFFF + 3:
            data = data[:0xFFFF]
    if c.chance(70):
        data = fix_length(data)
    return data


def fuzz_input(c):
    """
    A protocol and bytes for C{decode}: mostly mutated corpus messages,
    sometimes random bytes with or without a plausible header.
    """
    protocol, data = _from_corpus(c)
    if c.chance(10):
        protocol = c.one((ASAP, ENRP))
    kind = c.pick(10)
    if kind == 0:
        return protocol, c.blob(64)
    if kind == 1:
        return protocol, fix_length(bytes([c.pick(16), c.pick(256), 0, 0]) + c.blob(96))
    return protocol, mutate(c, data)


# --------------------------------------------------------------------------
# Target: decode


def check_decode(data, protocol):
    """
    Decode C{data}; raise on anything but a message or a proper
    L{ProtocolError}.
    """
    try:
        message = decode(data, protocol)
    except ProtocolError as e:
        if not isinstance(e.info, bytes) or not isinstance(e.cause, ErrorCause):
            raise Crash("malformed ProtocolError %r" % (e,))
        if e.reason.startswith("invalid field"):
            raise Crash("the codec's catch-all rejected this: %s" % (e,))
        if len(str(e)) > MAX_LOG_LINE:
            raise Crash("ProtocolError text of %d characters" % len(str(e)))
        # The answers to it encode.
        encode(ASAPError(OperationError.from_error(e)))
        encode(ENRPError(1, 2, OperationError.from_error(e)))
        return e
    if message.protocol != protocol:
        raise Crash("an %s message decoded as %s" % (message.protocol, protocol))
    echo(message)
    try:
        again = encode(message)
    except ValueError:
        # Only a message whose length left out its final padding and
        # that filled the 16-bit length grows past it when written.
        if len(data) <= 0xFFFC:
            raise
        return message
    if decode(again, protocol) != message:
        raise Crash("decode(encode(m)) != m for %r" % (message,))
    return message


# --------------------------------------------------------------------------
# Target: stream


def stream_input(c):
    """
    A protocol, a byte stream and where to cut it.
    """
    protocol = c.one((ASAP, ENRP))
    parts = []
    for _ in range(1 + c.pick(5)):
        p, data = _from_corpus(c)
        kind = c.pick(8)
        if kind == 0:
            data = c.blob(32)
        elif kind < 3:
            data = mutate(c, data)
        parts.append(data)
    stream = b"".join(parts)
    if c.chance(5):
        # A header announcing 0xFFFF bytes, and not all of them.
        stream = b"\x05\x00\xff\xff" + stream[:c.pick(2000)]
    cuts = sorted(c.pick(len(stream) + 1) for _ in range(c.pick(8)))
    chunks = []
    last = 0
    for cut in cuts + [len(stream)]:
        chunks.append(stream[last:cut])
        last = cut
    return protocol, chunks


def _feed_all(protocol, chunks):
    decoder = StreamDecoder(protocol)
    out = []
    broken = None
    for chunk in chunks:
        try:
            items = decoder.feed(chunk)
        except ProtocolError as e:
            if broken is None:
                # What came before the broken header, then the error.
                out.extend(e.messages)
                broken = e
            elif (e.cause, e.reason, e.info) != (broken.cause, broken.reason, broken.info):
                raise Crash("another framing error after the first")
            elif e.messages:
                raise Crash("messages after the framing was lost")
            continue
        if broken is not None:
            raise Crash("the decoder took input after losing the framing")
        for item in items:
            if not isinstance(item, ProtocolError) and item.protocol != protocol:
                raise Crash("stream yielded %r" % (item,))
        out.extend(items)
        if decoder.buffered > 0xFFFF:
            raise Crash("%d bytes buffered: more than one message" % decoder.buffered)
    return out, broken


def check_stream(protocol, chunks):
    out, broken = _feed_all(protocol, chunks)
    whole, whole_broken = _feed_all(protocol, [b"".join(chunks)])
    # The cutting changes nothing (errors compared by their text).
    same = [repr(x) if isinstance(x, ProtocolError) else x for x in out]
    if same != [repr(x) if isinstance(x, ProtocolError) else x for x in whole] or \
            (broken is None) != (whole_broken is None):
        raise Crash("the chunking changed what the stream decoder gave")
    return out


# --------------------------------------------------------------------------
# Targets: asap and enrp, a registrar over fake connections


class FakeConnection:
    """
    An L{IMessageConnection} that checks everything sent over it.
    """

    mapping = "fake"
    identity = None

    def __init__(self, harness, protocol, address, port, outgoing=False):
        self.harness = harness
        self.protocol = protocol
        self.peer = (address, port)
        self.peer_addresses = (address,)
        self.local = (LOOP, 3863 if protocol == ASAP else 9901)
        self.local_addresses = (LOOP,)
        self.peer_transport = TCPTransport(port, (address,))
        self.outgoing = outgoing
        self.open = True
        #: what was sent, decoded
        self.sent = []

    def __repr__(self):
        return "<fake %s %s:%d>" % (self.protocol, self.peer[0], self.peer[1])

    def send(self, message):
        try:
            data = encode(message)
        except Exception as e:
            raise Crash("the registrar sent a message that does not encode (%s: %s): %s"
                        % (type(e).__name__, e, type(message).__name__))
        self.send_encoded(data)

    def send_encoded(self, data):
        decoder = StreamDecoder(self.protocol)
        items = decoder.feed(data)
        for item in items:
            if isinstance(item, ProtocolError):
                raise Crash("the registrar sent an undecodable %s message: %s"
                            % (self.protocol, item))
        if decoder.buffered:
            raise Crash("the registrar sent %d bytes of a partial message" % decoder.buffered)
        self.sent.extend(items)

    def close(self):
        # As MessageStreamProtocol.close: the receiver hears of it at once.
        if self.open:
            self.open = False
            self.harness.lost(self)

    def rtt(self):
        raise NotAvailable("rtt", self.mapping)

    rto = path_mtu = rtt


class Harness:
    """
    A registrar (ASAP and ENRP sides) fed operations one at a time.

    An operation is a JSON-able list: C{["connect", side, address, port]}
    (and, for ENRP, C{outgoing}: a connection the server opened, over which
    a registrar is a peer by its Presence; an incoming one has to be from
    an address the server accepts), C{["dial", n]} (open the connection
    the ENRP server asked for),
    C{["deliver", side, n, hex]}, C{["close", side, n]},
    C{["multicast", hex]}, C{["advance", seconds]}.
    """

    def __init__(self, limits=False):
        self.now = 0.0
        #: every line logged
        self.lines = []
        config = RegistrarConfig(
            server_id=OWN_ID, min_address_scope=Scope.LOOPBACK, max_pool_elements=32,
            **({"max_hr_rate": 5.0, "max_eu_rate": 2.0} if limits else {}))
        self.registrar = ASAPRegistrar(config, rng=random.Random(1))
        self.dialled = []
        self.server = ENRPServer(
            self.registrar, ENRPConfig(max_elements_per_ht_request=4),
            information=lambda: ServerInformation(OWN_ID, TCPTransport(9901, (LOOP,))),
            multicast=True, rng=random.Random(2), reach_pe=self._reach_pe)
        # No timers: "advance" wakes both machines at every step.
        self.act = Runner(dial=self.dialled.append, multicast=self._multicast)
        for machine in (self.registrar, self.server):
            machine.log = Logger(namespace=type(machine).__name__, observer=self._log)
        self.conns = {ASAP: [], ENRP: []}
        self.act(self.server.start(self.now))

    def _log(self, event):
        if "log_failure" in event:
            raise Crash("a traceback was logged: %s" % (event["log_failure"].getTraceback(),))
        text = formatEvent(event)
        if len(text) > MAX_LOG_LINE:
            raise Crash("a log line of %d characters: %s..." % (len(text), text[:200]))
        self.lines.append(text)

    def _multicast(self, data):
        check = decode(data, ENRP)
        if not isinstance(check, Presence):
            raise Crash("multicast %r" % (check,))

    def _reach_pe(self, pe):
        live = [c for c in self.conns[ASAP] if c.open]
        return live[0] if live else None

    def machine(self, side):
        return self.registrar if side == ASAP else self.server

    def lost(self, conn):
        self.act(self.machine(conn.protocol).connection_lost(conn, self.now))

    def run(self, op):
        kind = op[0]
        if kind == "connect":
            side, address, port = op[1:4]
            outgoing = bool(op[4]) if len(op) > 4 else False
            conn = FakeConnection(self, side, ipaddress.ip_address(address), port, outgoing)
            self.conns[side].append(conn)
            if side == ASAP:
                self.act(self.registrar.connection_made(conn, self.now))
            else:
                self.act(self.server.connection_made(conn, self.now, outgoing=outgoing))
        elif kind == "dial":
            if not self.dialled:
                return
            info = self.dialled[op[1] % len(self.dialled)]
            address = info.transport.addresses[0]
            conn = FakeConnection(self, ENRP, address, info.transport.port, outgoing=True)
            self.conns[ENRP].append(conn)
            self.act(self.server.connection_made(conn, self.now, outgoing=True))
        elif kind == "deliver":
            _, side, n, data = op
            conns = [c for c in self.conns[side] if c.open]
            if not conns:
                return
            conn = conns[n % len(conns)]
            machine = self.machine(side)
            # As the TCP mapping does: one framed message, decoded.
            try:
                message = decode(bytes.fromhex(data), side)
            except ProtocolError as e:
                self.act(machine.protocol_error(conn, e, self.now))
            else:
                self.act(machine.message_received(conn, message, self.now))
        elif kind == "close":
            _, side, n = op
            conns = [c for c in self.conns[side] if c.open]
            if conns:
                conn = conns[n % len(conns)]
                conn.open = False
                self.lost(conn)
        elif kind == "multicast":
            # As PresenceMulticast.datagramReceived does.
            try:
                message = decode(bytes.fromhex(op[1]), ENRP)
            except ProtocolError:
                return
            source = ipaddress.ip_address("10.0.0.99")
            self.act(self.server.multicast_received(presence_from(message, source), source, self.now))
        elif kind == "advance":
            self.now += op[1]
            # A spurious wake-up is harmless (both machines say so): wake
            # both at every step.
            self.act(self.registrar.timer_fired(self.now))
            self.act(self.server.timer_fired(self.now))
        else:
            raise ValueError("unknown operation %r" % (op,))


# Messages that mean something to a registrar.

_ADDRESSES = ("127.0.0.1", "10.0.0.1", "10.0.0.2", "0.0.0.0", "::1", "fe80::1")
_HANDLES = (b"P", b"Q", b"EchoPool", b"", b"x" * 33)
_IDS = (1, 2, 3, 0, 0xFFFFFFFF)
_LIVES = (-1, 0, 1, 500, 90000, 0x7FFFFFFF)


def _address(c):
    return ipaddress.ip_address(c.one(_ADDRESSES))


def _handle(c):
    if c.chance(2):
        return b"h" * c.one((1000, 40000, 65487, 65500, 65516, 65517, 65524))
    return c.one(_HANDLES)


def _transport(c, addresses=None):
    if addresses is None:
        addresses = [_address(c)]
    kind = c.pick(6)
    port = c.one((0, 7, 9901, 0xFFFF))
    if kind <= 1:
        if c.chance(15):
            # a Registration of 64 KiB whose Handle Update would not fit
            addresses = addresses * c.one((2, 100, 8180))
        return SCTPTransport(port, addresses, c.pick(2))
    if kind == 2:
        return TCPTransport(port, addresses[:1], c.one((0, 1, 2)))
    if kind == 3:
        return UDPTransport(port, addresses[:1])
    if kind == 4:
        return UDPLiteTransport(port, addresses[:1])
    return DCCPTransport(port, addresses[:1], c.pick(2 ** 32))


def _policy(c):
    types = sorted(POLICY_FIELDS)
    if c.chance(10):
        return Policy(c.one((0, 0x12345678, 0xFFFFFFFF)), (), c.blob(12))
    t = c.one(types)
    return Policy(t, [c.one((0, 1, 0x7FFFFFFF, 0xFFFFFFFF)) for _ in POLICY_FIELDS[t]])


def _pool_element(c, address=None, home=0):
    addresses = [address] if address is not None else None
    return PoolElement(c.one(_IDS), home, c.one(_LIVES), _transport(c, addresses), _policy(c),
                       _transport(c) if c.chance(40) else None)


def _errors(c):
    if c.chance(3):
        # 64 KiB of causes (issue #14: 16,000 causes wrote 384 KB of log)
        return OperationError([Cause(c.one((1, 2, 3)))] * 16000)
    n = c.one((1, 1, 3, 16, 17))
    return OperationError([Cause(c.one((1, 2, 3, 9, 0x10, 0xFFFF)), c.blob(8)) for _ in range(n)])


def asap_message(c, conn_address):
    """
    An ASAP message a registrar may receive (or not expect).
    """
    kind = c.pick(14)
    h = _handle(c)
    if kind <= 3:
        return Registration(h, _pool_element(c, conn_address if c.chance(80) else None))
    if kind == 4:
        return Deregistration(h, c.one(_IDS))
    if kind <= 6:
        return HandleResolution(h, c.one((None, 0, 1, 5, 0xFFFFFFFF)))
    if kind == 7:
        return EndpointKeepAliveAck(h, c.one(_IDS))
    if kind == 8:
        return EndpointUnreachable(h, c.one(_IDS))
    if kind == 9:
        return ASAPError(_errors(c))
    # What a registrar never receives.
    return c.one((
        lambda: RegistrationResponse(h, 1, True, _errors(c)),
        lambda: DeregistrationResponse(h, 1),
        lambda: HandleResolutionResponse(h, _policy(c), [_pool_element(c)] * c.pick(4)),
        lambda: EndpointKeepAlive(c.pick(2 ** 32), h, 1, True),
        lambda: ServerAnnounce(1, [_transport(c)]),
        lambda: Cookie(c.blob(32)),
        lambda: CookieEcho(c.blob(32) * c.one((1, 1000))),
        lambda: BusinessCard(h, [_pool_element(c)] * c.pick(3), None),
        lambda: BusinessCard(h, [EXAMPLES[0][2].pool_element] * c.one((500, 1600)), None),
    ))()


def _server_id(c):
    return c.one(PEER_IDS + (OWN_ID, 0, 0x99))


def _information(c, server_id=None):
    addresses = [c.one((LOOP, ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("10.0.0.2")))]
    if c.chance(5):
        addresses = addresses + [ipaddress.ip_address(i + 1) for i in range(c.one((10, 7000)))]
    return ServerInformation(server_id if server_id is not None else _server_id(c),
                             TCPTransport(9901, addresses[:1]) if c.chance(50)
                             else SCTPTransport(9901, addresses))


def enrp_message(c):
    """
    An ENRP message a registrar may receive.
    """
    kind = c.pick(11)
    s = _server_id(c)
    r = c.one((0, OWN_ID, 0x99))
    if kind <= 1:
        return Presence(s, r, c.pick(0x10000), _information(c, s), c.chance(50))
    if kind == 2:
        return HandleTableRequest(s, r, c.chance(50))
    if kind == 3:
        entries = [HandleTableEntry(_handle(c) if c.chance(20) else c.one(_HANDLES),
                                    [_pool_element(c, home=c.one((s, OWN_ID, 0x99)))
                                     for _ in range(c.pick(4))])
                   for _ in range(c.pick(3))]
        return HandleTableResponse(s, r, entries, c.chance(30), c.chance(10))
    if kind <= 5:
        return HandleUpdate(s, r, c.one((0, 0, 1, 2, 0xFFFF)), _handle(c),
                            _pool_element(c, home=c.one((s, OWN_ID, 0x99))), c.chance(10))
    if kind == 6:
        return ListRequest(s, r)
    if kind == 7:
        return ListResponse(s, r, [_information(c) for _ in range(c.pick(4))], c.chance(10))
    if kind == 8:
        return c.one((InitTakeover, InitTakeoverAck, TakeoverServer))(
            s, r, c.one(PEER_IDS + (OWN_ID, 0x99)))
    if kind == 9:
        return ENRPError(s, r, _errors(c))
    return HandleUpdate(s, r, 0, c.one(_HANDLES), _pool_element(c, home=s))


def _with_unrecognized(c, data):
    # Append parameters of unknown types with every action bit pattern.
    extra = b"".join(_tlv(c.one((0x0077, 0x4077, 0x8077, 0xC077)), c.blob(8))
                     for _ in range(c.one((1, 2, 20))))
    return fix_length(data + extra)


def wire_bytes(c, message):
    """
    The bytes to deliver for C{message}: its encoding (if it has one),
    often with unknown parameters added or mutated.
    """
    try:
        data = encode(message)
    except ValueError:
        # Too long for one message: a large one of the corpus instead.
        data = c.one(LARGE)[1]
    kind = c.pick(10)
    if kind == 0:
        return _with_unrecognized(c, data)
    if kind <= 2:
        return mutate(c, data)
    return data


def operations(c, side, count):
    """
    A sequence of C{count} deliveries to C{side} (C{"asap"} or
    C{"enrp"}), with connections, closes and time steps in between.
    """
    ops = []
    addresses = ("127.0.0.1", "10.0.0.1", "10.0.0.2", "::1")
    for i in range(1 + c.pick(3)):
        ops.append(["connect", side, addresses[i], 40000 + i, c.chance(70)])
    if side == ENRP:
        ops.append(["connect", ASAP, "127.0.0.1", 50000])
    delivered = 0
    while delivered < count:
        kind = c.pick(20)
        if kind == 0:
            ops.append(["connect", side, c.one(addresses), 40000 + c.pick(4), c.chance(50)])
        elif kind == 1:
            ops.append(["close", side, c.pick(4)])
        elif kind == 2:
            ops.append(["advance", c.one((0.0, 0.5, 2.5, 5.0, 10.0, 100.0))])
        elif kind == 3 and side == ENRP:
            ops.append(["dial", c.pick(4)])
        elif kind == 4 and side == ENRP:
            ops.append(["multicast", wire_bytes(c, enrp_message(c)).hex()])
            delivered += 1
        elif kind == 5 and side == ENRP:
            # The ASAP side registers PEs: Handle Updates to the peers.
            message = Registration(c.one(_HANDLES[:3]), _pool_element(c, LOOP))
            ops.append(["deliver", ASAP, 0, wire_bytes(c, message).hex()])
            delivered += 1
        else:
            if c.chance(15):
                _, data = _from_corpus(c)
                data = mutate(c, data) if c.chance(80) else data
            elif side == ASAP:
                data = wire_bytes(c, asap_message(c, ipaddress.ip_address(c.one(addresses))))
            else:
                data = wire_bytes(c, enrp_message(c))
            ops.append(["deliver", side, c.pick(4), data.hex()])
            delivered += 1
    return ops


def check_machine(ops, limits=False):
    """
    Run C{ops} on a fresh registrar; raise on any failure.
    """
    harness = Harness(limits)
    for op in ops:
        harness.run(op)
    return harness


# --------------------------------------------------------------------------
# Running


def _signature(target, error):
    tb = traceback.extract_tb(error.__traceback__)
    where = "%s:%d" % (os.path.basename(tb[-1].filename), tb[-1].lineno) if tb else "?"
    return "%s-%s-%s" % (target, type(error).__name__, where)


def run_one(target, c):
    """
    Generate one input of C{target} and check it.

    @return: C{(number of inputs, the input as JSON-able data, the error
        or None)}.
    """
    if target == "decode":
        protocol, data = fuzz_input(c)
        case = {"target": target, "protocol": protocol, "data": data.hex()}
        n = 1
    elif target == "stream":
        protocol, chunks = stream_input(c)
        case = {"target": target, "protocol": protocol, "chunks": [x.hex() for x in chunks]}
        n = 1
    else:
        side = ASAP if target == "asap" else ENRP
        count = 5 + c.pick(40)
        case = {"target": target, "limits": c.chance(30), "ops": operations(c, side, count)}
        n = count
    try:
        replay(case)
    except Exception as e:
        return n, case, e
    return n, case, None


def replay(case):
    """
    Check one saved input (as C{run_one} makes them).
    """
    target = case["target"]
    if target == "decode":
        return check_decode(bytes.fromhex(case["data"]), case["protocol"])
    if target == "stream":
        return check_stream(case["protocol"], [bytes.fromhex(x) for x in case["chunks"]])
    return check_machine(case["ops"], case.get("limits", False))


def _save(case, error, signature):
    os.makedirs(CRASHES, exist_ok=True)
    blob = json.dumps(case, sort_keys=True)
    name = "%s-%s.json" % (signature.replace(":", "_").replace("/", "_"),
                           hashlib.sha1(blob.encode()).hexdigest()[:10])
    path = os.path.join(CRASHES, name)
    case = dict(case, error="".join(traceback.format_exception(type(error), error,
                                                                 error.__traceback__)))
    with open(path, "w") as f:
        json.dump(case, f, indent=1, sort_keys=True)
    return path


def worker(args):
    """
    Run C{budget} inputs of one target from one seed; return the counts.
    """
    target, budget, seed, keep = args
    c = RandomChooser(random.Random("%s/%s" % (seed, target)))
    done = 0
    crashes = 0
    signatures = {}
    start = time.perf_counter()
    while done < budget:
        n, case, error = run_one(target, c)
        done += n
        if error is not None:
            crashes += 1
            sig = _signature(target, error)
            if sig not in signatures:
                signatures[sig] = _save(case, error, sig)
            if len(signatures) >= keep:
                break
    return target, done, crashes, signatures, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1000000, help="inputs in all (10^6)")
    parser.add_argument("--seed", default="14", help="the seed (any text; default 14)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated targets (default: all)")
    parser.add_argument("--replay", metavar="FILE", help="re-run one saved input")
    args = parser.parse_args(argv)

    if args.replay:
        with open(args.replay) as f:
            case = json.load(f)
        replay(case)
        print("%s: no crash" % args.replay)
        return 0

    targets = [t for t in args.targets.split(",") if t]
    total_weight = sum(WEIGHTS[t] for t in targets)
    # Each target's share, in slices so that the processes stay busy.
    jobs = []
    for t in targets:
        share = args.inputs * WEIGHTS[t] // total_weight
        slices = max(1, args.jobs * 2)
        for i in range(slices):
            jobs.append((t, share // slices + (1 if i < share % slices else 0),
                         "%s/%d" % (args.seed, i), 20))
    start = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.map(worker, jobs, chunksize=1)
    else:
        results = [worker(j) for j in jobs]
    elapsed = time.perf_counter() - start

    per_target = {t: [0, 0, 0.0] for t in targets}
    saved = {}
    for target, done, crashes, signatures, seconds in results:
        per_target[target][0] += done
        per_target[target][1] += crashes
        per_target[target][2] += seconds
        saved.update(signatures)
    count = sum(v[0] for v in per_target.values())
    crashes = sum(v[1] for v in per_target.values())

    lines = [
        "command: python3 bench/fuzz.py --inputs %d --seed %s --jobs %d"
        % (args.inputs, args.seed, args.jobs),
        "date: %s" % time.strftime("%Y-%m-%d"),
        "python: %s %s" % (platform.python_implementation(), platform.python_version()),
        "machine: %s, %d cores, %d processes" % (platform.machine(), os.cpu_count() or 1,
                                                 args.jobs),
        "seed: %s" % args.seed,
        "inputs: %d" % count,
        "crashes: %d" % crashes,
        "time: %.1f s (%.0f inputs/s)" % (elapsed, count / elapsed if elapsed else 0),
        "",
        "%-8s %10s %8s %10s" % ("target", "inputs", "crashes", "inputs/s"),
    ]
    for t in targets:
        done, n, seconds = per_target[t]
        lines.append("%-8s %10d %8d %10.0f" % (t, done, n, done / seconds if seconds else 0))
    for sig, path in sorted(saved.items()):
        lines.append("crash %s: %s" % (sig, os.path.relpath(path)))
    text = "\n".join(lines) + "\n"
    print(text, end="")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "fuzz.txt"), "w") as f:
        f.write(text)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
