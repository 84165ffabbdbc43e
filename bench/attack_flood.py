"""
One attacker process of bench/attack.py (started by it; not meant to be
run by hand): floods a registrar over loopback TCP from its own source
addresses, with plain non-blocking sockets, as fast as the registrar takes
the bytes, for a bounded time, then prints one JSON line of what it did.

Every connection is bound to one of this process's source addresses
(127.X.Y.Z, never 127.0.0.1, which the legitimate side uses); each address
holds up to C{--connections} connections, which are reopened as the
registrar closes them.  The kinds (C{--kind}):

``register``
    Registrations of new PEs in one pool, pipelined; the attacker reads the
    answers and acknowledges every Endpoint Keep Alive, so its PEs stay.
``pools``
    The same, each PE in a pool of its own.
``resolve``
    Handle Resolutions of the legitimate pool, pipelined; answers read.
``unreachable``
    Endpoint Unreachable reports of the legitimate PEs (learned by one
    resolution first, as an attacker would), pipelined.
``slow``
    Handle Resolutions asking for every PE of the legitimate pool (large
    answers) on connections that never read (receive buffer at its
    minimum).
``idle``
    Connections that send nothing.
``half``
    Connections that send half a message (a header announcing 65,535
    bytes, then 100 bytes) and nothing more.
``malformed``
    Mutated ASAP messages (random bytes flipped, parameters cut, lengths
    changed) and, one message in 20, random bytes that break the framing.
``tls``
    Against a TLS-PSK registrar: a third of the connections send a garbage
    ClientHello, a third a real ClientHello with an unknown PSK identity,
    a third the first 60 bytes of one and nothing more.
``enrp``
    To the ENRP port: a Presence and then ENRP Handle Updates (ADD_PE into
    the legitimate pool) from strangers with random server ids.

Every loop is bounded: the main loop by C{--duration}, each pass by the
number of connections, connection attempts per pass by a constant.
"""
import argparse
import errno
import json
import os
import random
import resource
import selectors
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from rserpool.codes import PolicyType  # noqa: E402
from rserpool.wire import (  # noqa: E402
    ADD_PE,
    ASAPError,
    Deregistration,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolution,
    HandleUpdate,
    OperationError,
    Policy,
    PoolElement,
    Presence,
    Registration,
    ServerInformation,
    TCPTransport,
    decode,
    encode,
)

POOL = b"legit"
ALL_ITEMS = 0xFFFFFFFF
_H = struct.Struct("!H")
_I = struct.Struct("!I")
#: New connections opened per pass of the loop, at most.
CONNECTS_PER_PASS = 128
#: Bytes queued per connection before waiting for the socket.
BATCH = 32768
#: The attackers' socket send buffer (bytes): see Flood.connect.
SEND_BUFFER = 65536
#: A connection attempt not done after this many seconds is given up.
CONNECT_TIMEOUT = 3.0


def source_address(process, index):
    """
    The C{index}th source address of attacker process C{process}:
    127.(process + 2).Y.Z, never 127.0.0.1.
    """
    return "127.%d.%d.%d" % (process + 2, index // 250, index % 250 + 1)


def cut(buffer):
    """
    Cut whole messages off the front of C{buffer} (a bytearray); return
    them as bytes.
    """
    out = []
    pos = 0
    n = len(buffer)
    while n - pos >= 4:
        length = _H.unpack_from(buffer, pos + 2)[0]
        if length < 4:
            del buffer[:]
            return out
        padded = (length + 3) & ~3
        if n - pos < padded:
            break
        out.append(bytes(buffer[pos:pos + length]))
        pos += padded
    del buffer[:pos]
    return out


def has_error(message):
    """
    Whether an answer carries an Operation Error parameter at its top
    level (a refused request).
    """
    pos = 4
    end = len(message)
    while end - pos >= 4:
        ptype, plen = struct.unpack_from("!HH", message, pos)
        if plen < 4:
            return False
        if ptype & 0x3FFF == 0x000C:
            return True
        pos += (plen + 3) & ~3
    return False


class Template:
    """
    An encoded message whose 32-bit fields at C{offsets} are patched for
    every copy.
    """

    def __init__(self, data, markers):
        self.data = bytearray(data)
        self.offsets = []
        for marker in markers:
            offset = bytes(self.data).find(marker)
            if offset < 0:
                raise ValueError("marker not found")
            self.offsets.append(offset)

    def make(self, values):
        for offset, value in zip(self.offsets, values):
            if isinstance(value, int):
                _I.pack_into(self.data, offset, value)
            else:
                self.data[offset:offset + len(value)] = value
        return bytes(self.data)


def registration_template(address, own_pool):
    handle = b"atk-ZZZZZZZZ" if own_pool else b"atk-flood"
    element = PoolElement(0xA5C3E1F7, 0, 3600000, TCPTransport(9, (address,)),
                          Policy.make(PolicyType.ROUND_ROBIN))
    markers = [_I.pack(0xA5C3E1F7)] + ([b"ZZZZZZZZ"] if own_pool else [])
    return Template(encode(Registration(handle, element)), markers)


def handle_update_template(address):
    element = PoolElement(0xA5C3E1F7, 0x5EEDF00D, 0, TCPTransport(9, (address,)),
                          Policy.make(PolicyType.ROUND_ROBIN))
    message = HandleUpdate(0x5EEDF00D, 0, ADD_PE, POOL, element)
    data = encode(message)
    # The sender id comes first in the message and again as the PE's home.
    t = Template(data, [_I.pack(0xA5C3E1F7)])
    sender = [i for i in range(len(data) - 3) if data[i:i + 4] == _I.pack(0x5EEDF00D)]
    t.offsets.extend(sender)
    return t


def mutated_messages(rng, address, count):
    """
    C{count} malformed ASAP messages: valid ones with bytes flipped,
    parameters cut or lengths changed, whose header still frames them,
    and one in 20 random bytes that break the framing.
    """
    element = PoolElement(0x12345678, 0, 30000, TCPTransport(9, (address,)),
                          Policy.make(PolicyType.ROUND_ROBIN))
    bases = [
        encode(Registration(b"legit", element)),
        encode(Registration(b"m" * 200, element)),
        encode(HandleResolution(POOL)),
        encode(HandleResolution(POOL, 5)),
        encode(EndpointUnreachable(POOL, 0x1E610000)),
        encode(Deregistration(POOL, 0x1E610001)),
        encode(EndpointKeepAliveAck(POOL, 0x1E610002)),
        encode(ASAPError(OperationError.of(3, b"x" * 40))),
    ]
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.05:
            # Random bytes: the framing is likely lost; the connection ends.
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randrange(4, 200))))
            continue
        data = bytearray(rng.choice(bases))
        if roll < 0.5:
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(4, len(data))] = rng.getrandbits(8)
        elif roll < 0.7:
            # A parameter length field made wrong.
            pos = rng.randrange(4, max(5, len(data) - 4)) & ~3
            _H.pack_into(data, pos + 2, rng.choice((0, 3, 5, 0xFFFF, len(data))))
        elif roll < 0.85:
            data = data[:rng.randrange(8, len(data) + 1)]
        else:
            # An unknown message type, or random parameters.
            data[0] = rng.choice((0x00, 0x0F, 0x40, 0xFF, 0x03, 0x06, 0x07))
            data += bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        length = len(data)
        _H.pack_into(data, 2, length)
        data += bytes(-length % 4)
        out.append(bytes(data))
    return out


def client_hello():
    """
    The bytes of a real TLS ClientHello offering a PSK identity no
    registrar knows (made with rserpool's own PSK client over memory BIOs).
    """
    from OpenSSL import SSL

    from rserpool.transport.psk import PSKClientCreator

    creator = PSKClientCreator(b"mallory", os.urandom(32))
    connection = creator.clientConnectionForTLS(None)
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


class Conn:
    __slots__ = ("sock", "address", "state", "out", "inbuf", "opened", "mode", "sender",
                 "sent_here", "events")

    def __init__(self, sock, address, mode):
        self.sock = sock
        self.address = address
        self.state = "connecting"
        self.out = bytearray()
        self.inbuf = bytearray()
        self.opened = time.monotonic()
        self.mode = mode
        self.sent_here = 0
        self.sender = 0
        self.events = 0


class Flood:
    """
    The loop common to every kind: keep C{connections} connections per
    source address, call the kind's hooks, count.
    """

    reads = True

    def __init__(self, args, process):
        self.args = args
        self.process = process
        self.rng = random.Random(args.seed * 1000 + process)
        self.port = args.port
        self.addresses = [source_address(process, i) for i in range(args.addresses)]
        self.per_address = args.connections
        self.sel = selectors.DefaultSelector()
        self.conns = {}
        self.count = {a: 0 for a in self.addresses}
        self.next_mode = 0
        self.stats = {
            "messages": 0, "bytes": 0, "connects": 0, "connect_failed": 0,
            "connect_timeout": 0, "closed_by_registrar": 0, "answers": 0,
            "refused_answers": 0, "accepted": 0, "keep_alive_acks": 0, "max_open": 0,
            "open_at_end": 0,
        }
        self.failures = {}

    # -- hooks ---------------------------------------------------------------

    def opened(self, conn):
        """The connection is up: queue what it sends first."""

    def refill(self, conn):
        """The connection's queue is empty: queue more (or not)."""

    def answer(self, conn, message):
        """A whole message came from the registrar."""
        self.stats["answers"] += 1

    # -- the loop ------------------------------------------------------------

    def connect(self, address):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # What an attacker elsewhere would keep in its own kernel: not
            # this host's TCP memory (tcp_mem), which all sockets share.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            if not self.reads:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.bind((address, 0))
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", self.port))
        except OSError as e:
            sock.close()
            self.fail("bind/connect: " + errno.errorcode.get(e.errno, str(e.errno)))
            return False
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail("connect: " + errno.errorcode.get(err, str(err)))
            return False
        conn = Conn(sock, address, self.next_mode)
        self.next_mode += 1
        self.conns[sock.fileno()] = conn
        self.count[address] += 1
        self.stats["connects"] += 1
        self.sel.register(sock, selectors.EVENT_WRITE, conn)
        return True

    def fail(self, what):
        self.stats["connect_failed"] += 1
        self.failures[what] = self.failures.get(what, 0) + 1

    def drop(self, conn, by_registrar):
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self.conns.pop(conn.sock.fileno(), None)
        conn.sock.close()
        self.count[conn.address] -= 1
        if by_registrar:
            self.stats["closed_by_registrar"] += 1

    def interest(self, conn):
        if conn.state == "connecting":
            events = selectors.EVENT_WRITE
        else:
            events = selectors.EVENT_READ if self.reads else 0
            if conn.out:
                events |= selectors.EVENT_WRITE
            if not events:
                events = selectors.EVENT_READ
        if events != conn.events:
            self.sel.modify(conn.sock, events, conn)
            conn.events = events

    def flush(self, conn):
        if not conn.out:
            self.refill(conn)
        while conn.out:
            try:
                n = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.drop(conn, True)
                return
            sent = bytes(conn.out[:n])
            del conn.out[:n]
            self.stats["bytes"] += n
            self.count_sent(conn, sent)
            if conn.out:
                break
            self.refill(conn)
            if n < 1:
                break
        self.interest(conn)

    def count_sent(self, conn, data):
        """Count the messages whose bytes went out (by default, none)."""

    def run(self):
        deadline = time.monotonic() + self.args.duration
        budget = max(16, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64)
        next_check = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            made = 0
            for address in self.addresses:
                while (self.count[address] < self.per_address and made < CONNECTS_PER_PASS
                       and len(self.conns) < budget):
                    made += 1
                    if not self.connect(address):
                        break
            self.stats["max_open"] = max(self.stats["max_open"], len(self.conns))
            for key, mask in self.sel.select(0.05):
                conn = key.data
                if conn.sock.fileno() < 0 or self.conns.get(conn.sock.fileno()) is not conn:
                    continue
                if conn.state == "connecting":
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self.drop(conn, False)
                        self.fail("connect: " + errno.errorcode.get(err, str(err)))
                        continue
                    conn.state = "open"
                    conn.events = selectors.EVENT_WRITE
                    self.opened(conn)
                    self.flush(conn)
                    continue
                if mask & selectors.EVENT_READ:
                    try:
                        data = conn.sock.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    except OSError:
                        self.drop(conn, True)
                        continue
                    if data == b"":
                        self.drop(conn, True)
                        continue
                    if data:
                        conn.inbuf += data
                        for message in cut(conn.inbuf):
                            self.answer(conn, message)
                        if self.conns.get(conn.sock.fileno()) is not conn:
                            continue
                if mask & selectors.EVENT_WRITE:
                    self.flush(conn)
            # Connections stuck in connect (a full listen queue).
            if now >= next_check:
                next_check = now + 0.5
                for conn in [c for c in self.conns.values()
                             if c.state == "connecting" and now - c.opened > CONNECT_TIMEOUT]:
                    self.drop(conn, False)
                    self.stats["connect_timeout"] += 1
        self.stats["open_at_end"] = len(self.conns)
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.stats["failures"] = self.failures
        return self.stats


class Pipelined(Flood):
    """
    Sends a stream of requests made by C{make(conn)}, as fast as the socket
    takes them, and reads the answers.
    """

    def __init__(self, args, process):
        Flood.__init__(self, args, process)
        self.size = None

    def make(self, conn):
        raise NotImplementedError

    def refill(self, conn):
        batch = []
        size = 0
        while size < BATCH:
            message = self.make(conn)
            if message is None:
                break
            batch.append(message)
            size += len(message)
        if batch:
            conn.out += b"".join(batch)
            self.size = len(batch[0])

    def count_sent(self, conn, data):
        # Messages of a kind have one size: count whole ones by bytes.
        if self.size:
            conn.sent_here += len(data)
            whole, conn.sent_here = divmod(conn.sent_here, self.size)
            self.stats["messages"] += whole


class Register(Pipelined):
    def __init__(self, args, process, own_pool=False):
        Pipelined.__init__(self, args, process)
        self.templates = {a: registration_template(a, own_pool) for a in self.addresses}
        self.own_pool = own_pool
        self.next_id = (process + 1) << 28 | self.rng.getrandbits(20) << 4

    def make(self, conn):
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF or 1
        values = [self.next_id]
        if self.own_pool:
            values.append(b"%08x" % self.next_id)
        return self.templates[conn.address].make(values)

    def answer(self, conn, message):
        Flood.answer(self, conn, message)
        kind = message[0]
        if kind == 0x03:
            if message[1] & 1:
                self.stats["refused_answers"] += 1
            else:
                self.stats["accepted"] += 1
        elif kind == 0x07:
            # Keep the flood's PEs alive, as real PEs would.
            try:
                keep_alive = decode(message, "asap")
            except Exception:
                return
            if keep_alive.identifier is not None:
                conn.out += encode(EndpointKeepAliveAck(keep_alive.pool_handle,
                                                        keep_alive.identifier))
                self.stats["keep_alive_acks"] += 1
                self.interest(conn)


class Resolve(Pipelined):
    def __init__(self, args, process):
        Pipelined.__init__(self, args, process)
        self.request = encode(HandleResolution(POOL))

    def make(self, conn):
        return self.request

    def answer(self, conn, message):
        Flood.answer(self, conn, message)
        if message[0] == 0x06:
            if has_error(message):
                self.stats["refused_answers"] += 1
            else:
                self.stats["accepted"] += 1


class Unreachable(Pipelined):
    """
    Learns the legitimate PEs' identifiers with one resolution, then
    reports them unreachable, round robin, as fast as it can.
    """

    def __init__(self, args, process):
        Pipelined.__init__(self, args, process)
        self.pe_ids = []
        self.asked = False
        self.next = 0
        self.reports = []

    def opened(self, conn):
        if not self.pe_ids and not self.asked:
            self.asked = True
            conn.out += encode(HandleResolution(POOL, ALL_ITEMS))

    def make(self, conn):
        if not self.reports:
            return None
        self.next = (self.next + 1) % len(self.reports)
        return self.reports[self.next]

    def answer(self, conn, message):
        Flood.answer(self, conn, message)
        if message[0] == 0x06 and not self.pe_ids:
            try:
                response = decode(message, "asap")
            except Exception:
                return
            self.pe_ids = sorted(pe.identifier for pe in response.pool_elements)
            self.reports = [encode(EndpointUnreachable(POOL, i)) for i in self.pe_ids]
            self.stats["pe_ids_learned"] = len(self.pe_ids)
            for other in self.conns.values():
                if other.state == "open" and other is not conn:
                    self.flush(other)
            self.flush(conn)


class Slow(Pipelined):
    """
    Asks for large answers and never reads them.
    """

    reads = False

    def __init__(self, args, process):
        Pipelined.__init__(self, args, process)
        self.request = encode(HandleResolution(POOL, ALL_ITEMS))

    def make(self, conn):
        return self.request


class Idle(Flood):
    """
    Opens connections and sends nothing (or C{first}, once).
    """

    first = b""

    def opened(self, conn):
        if self.first:
            conn.out += self.first

    def count_sent(self, conn, data):
        if not conn.out:
            self.stats["messages"] += 1


class HalfHeader(Idle):
    # A Handle Resolution header announcing 65,535 bytes, then 100 bytes.
    first = bytes((0x05, 0x00, 0xFF, 0xFF)) + bytes(100)


class Malformed(Flood):
    def __init__(self, args, process):
        Flood.__init__(self, args, process)
        self.messages = mutated_messages(self.rng, self.addresses[0], 4096)
        self.next = 0

    def refill(self, conn):
        size = 0
        parts = []
        while size < BATCH:
            message = self.messages[self.next]
            self.next = (self.next + 1) % len(self.messages)
            parts.append(message)
            size += len(message)
            self.stats["messages"] += 1
        conn.out += b"".join(parts)

    def answer(self, conn, message):
        Flood.answer(self, conn, message)
        if message[0] == 0x0E:
            self.stats["refused_answers"] += 1


class TLS(Flood):
    def __init__(self, args, process):
        Flood.__init__(self, args, process)
        self.hello = client_hello()
        self.modes = {0: "garbage", 1: "hello", 2: "stall"}
        self.by_mode = {"garbage": 0, "hello": 0, "stall": 0}

    def opened(self, conn):
        mode = self.modes[conn.mode % 3]
        self.by_mode[mode] += 1
        if mode == "garbage":
            body = bytes(self.rng.getrandbits(8) for _ in range(300))
            conn.out += bytes((0x16, 0x03, 0x01)) + _H.pack(len(body)) + body
        elif mode == "hello":
            conn.out += self.hello
        else:
            conn.out += self.hello[:60]

    def count_sent(self, conn, data):
        if not conn.out:
            self.stats["messages"] += 1

    def answer(self, conn, message):
        pass

    def run(self):
        stats = Flood.run(self)
        stats["modes"] = self.by_mode
        return stats


class ENRP(Pipelined):
    def __init__(self, args, process):
        Pipelined.__init__(self, args, process)
        self.templates = {a: handle_update_template(a) for a in self.addresses}

    def opened(self, conn):
        sender = self.rng.getrandbits(32) or 1
        conn.sender = sender
        information = ServerInformation(sender, TCPTransport(9901, (conn.address,)))
        conn.out += encode(Presence(sender, 0, 0, information))

    def make(self, conn):
        pe_id = self.rng.getrandbits(32) or 1
        return self.templates[conn.address].make([pe_id, conn.sender, conn.sender])

    def answer(self, conn, message):
        Flood.answer(self, conn, message)
        if message[0] == 0x0A:
            self.stats["refused_answers"] += 1


KINDS = {
    "register": lambda a, p: Register(a, p),
    "pools": lambda a, p: Register(a, p, own_pool=True),
    "resolve": Resolve,
    "unreachable": Unreachable,
    "slow": Slow,
    "idle": Idle,
    "half": HalfHeader,
    "malformed": Malformed,
    "tls": TLS,
    "enrp": ENRP,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--process", type=int, default=0)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--addresses", type=int, default=4)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    flood = KINDS[args.kind](args, args.process)
    started = time.monotonic()
    stats = flood.run()
    stats["elapsed"] = round(time.monotonic() - started, 3)
    stats["kind"] = args.kind
    stats["process"] = args.process
    stats["addresses"] = args.addresses
    sys.stdout.write(json.dumps(stats) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
