"""
Load generator for bench_registrar.py: one process driving several ASAP
connections over loopback TCP with plain non-blocking sockets, one request
outstanding per connection (closed loop), measuring each request's latency.

It uses the codec only to build requests; responses are cut by their
length field and checked by their type byte, so the client spends as
little CPU as possible per request.
"""
import os
import random
import selectors
import socket
import struct
import time

from rserpool.codes import PolicyType
from rserpool.wire import HandleResolution, Policy, PoolElement, Registration, TCPTransport, encode

REGISTRATION_RESPONSE = 0x03
HANDLE_RESOLUTION_RESPONSE = 0x06
KEEP_ALIVE = 0x07
_H = struct.Struct("!H")


def pool_handle(i, pools):
    return b"bench-pool-%d" % (i % pools)


def registration(pe_id, pools, port):
    element = PoolElement(
        pe_id, 0, 3600000, TCPTransport(port, ("127.0.0.1",)), Policy.make(PolicyType.ROUND_ROBIN)
    )
    return encode(Registration(pool_handle(pe_id, pools), element))


class Connection:
    def __init__(self, index, address):
        self.index = index
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.requests = []
        self.next = 0
        self.bad = 0


def _messages(conn, data):
    """
    Cut C{data} into whole messages; return their type bytes.
    """
    buf = conn.buffer
    buf += data
    types = []
    pos = 0
    n = len(buf)
    while n - pos >= 4:
        length = (_H.unpack_from(buf, pos + 2)[0] + 3) & ~3
        if n - pos < length:
            break
        types.append(buf[pos])
        pos += length
    del buf[:pos]
    return types


def run_phase(conns, kind, duration=None, count=None):
    """
    Run one closed-loop phase on every connection.

    @param kind: the response type byte each request expects.
    @param duration: run this many seconds, or
    @param count: send each connection's request list once.
    @return: (completed requests, elapsed seconds, latencies in seconds).
    """
    sel = selectors.DefaultSelector()
    latencies = []
    active = 0
    start = time.perf_counter()
    deadline = start + duration if duration is not None else None
    for conn in conns:
        if count is not None and not conn.requests:
            continue
        conn.next = 0
        sel.register(conn.sock, selectors.EVENT_READ, conn)
        conn.sent_at = time.perf_counter()
        conn.sock.sendall(conn.requests[0])
        conn.next = 1
        active += 1
    done = 0
    while active:
        for key, _ in sel.select(1.0):
            conn = key.data
            data = conn.sock.recv(65536)
            if not data:
                raise SystemExit("registrar closed connection %d" % conn.index)
            for t in _messages(conn, data):
                if t == KEEP_ALIVE:
                    continue
                if t != kind:
                    conn.bad += 1
                now = time.perf_counter()
                latencies.append(now - conn.sent_at)
                done += 1
                finished = (
                    now >= deadline if deadline is not None else conn.next >= len(conn.requests)
                )
                if finished:
                    sel.unregister(conn.sock)
                    active -= 1
                    break
                request = conn.requests[conn.next % len(conn.requests)]
                conn.next += 1
                conn.sent_at = now
                conn.sock.sendall(request)
    elapsed = time.perf_counter() - start
    sel.close()
    return done, elapsed, latencies


def worker(address, first_index, n_conns, pes_per_conn, pools, duration, barrier, results, cpu):
    """
    One client process: C{n_conns} connections, each registering
    C{pes_per_conn} PEs, then re-registering them, then resolving.
    """
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except (AttributeError, OSError):
            pass
    conns = [Connection(first_index + i, address) for i in range(n_conns)]
    for conn in conns:
        port = conn.sock.getsockname()[1]
        conn.requests = [
            registration(((conn.index + 1) << 20) | (k + 1), pools, port)
            for k in range(pes_per_conn)
        ]
    out = {}
    barrier.wait()
    out["register"] = run_phase(conns, REGISTRATION_RESPONSE, count=True)
    barrier.wait()
    out["reregister"] = run_phase(conns, REGISTRATION_RESPONSE, duration=duration)
    rng = random.Random(first_index)
    for conn in conns:
        conn.requests = [
            encode(HandleResolution(pool_handle(rng.randrange(pools), pools)))
            for _ in range(64)
        ]
    barrier.wait()
    out["resolve"] = run_phase(conns, HANDLE_RESOLUTION_RESPONSE, duration=duration)
    out["bad"] = sum(c.bad for c in conns)
    results.put(out)
    barrier.wait()
    for conn in conns:
        conn.sock.close()
