"""
Load client of bench_interop.py: one process driving several one-to-one
SCTP associations (PPID 11) to a registrar, ours or RSPLIB's, with plain
non-blocking sockets.  Each association keeps C{window} requests
outstanding (closed loop) and every request is timed.

The client speaks nothing but ASAP's wire format, built with our codec
once, before the measurement: both registrars get byte-identical requests
from identical sockets.  Responses are counted by their type byte (each
SCTP message is one ASAP message); a response of another type than
expected counts as "bad".
"""
import collections
import os
import random
import selectors
import socket
import time

from rserpool.codes import ASAP_PPID, PolicyType
from rserpool.transport import _sctp_abi as abi
from rserpool.wire import HandleResolution, Policy, PoolElement, Registration, TCPTransport, encode

REGISTRATION_RESPONSE = 0x03
HANDLE_RESOLUTION_RESPONSE = 0x06
KEEP_ALIVE = 0x07


def pool_handle(i):
    return b"bench-pool-%d" % i


def registration(pe_id, pool, address, port):
    """
    An encoded Registration of PE C{pe_id} in pool number C{pool}, whose
    user transport is TCP at C{address}:C{port} (the client's own address:
    both registrars accept only the association's addresses).
    """
    element = PoolElement(
        pe_id, 0, 3600000, TCPTransport(port, (address,)), Policy.make(PolicyType.ROUND_ROBIN)
    )
    return encode(Registration(pool_handle(pool), element))


class Association:
    """
    One one-to-one SCTP association to the registrar.
    """

    def __init__(self, index, registrar, local):
        self.index = index
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, abi.IPPROTO_SCTP)
        s.setsockopt(abi.SOL_SCTP, abi.SCTP_NODELAY, 1)
        # no notifications: every message read is an ASAP message
        s.setsockopt(abi.SOL_SCTP, abi.SCTP_EVENTS, abi.pack_events())
        # send() carries PPID 11 without ancillary data
        s.setsockopt(abi.SOL_SCTP, abi.SCTP_DEFAULT_SNDINFO, abi.pack_sndinfo(ASAP_PPID))
        s.bind((local, 0))
        s.settimeout(10)
        s.connect(registrar)
        s.setblocking(False)
        self.sock = s
        self.port = s.getsockname()[1]
        self.sent_at = []
        self.requests = []
        self.next = 0
        self.bad = 0
        self.keepalives = 0

    def close(self):
        self.sock.close()


def run_phase(assocs, kind, window, duration=None, once=False):
    """
    Run one closed-loop phase on every association.  Latencies are
    measured from the wake-up that sent a request to the wake-up that saw
    its answer.

    @param kind: the response type byte each request expects.
    @param window: requests outstanding per association.
    @param duration: run this many seconds, or
    @param once: send each association's request list once.
    @return: (completed requests, elapsed seconds, latencies in seconds).
    """
    sel = selectors.DefaultSelector()
    latencies = []
    active = 0
    start = time.perf_counter()
    deadline = start + duration if duration is not None else None
    perf = time.perf_counter
    for a in assocs:
        if once and not a.requests:
            continue
        a.next = 0
        a.sent_at = collections.deque()
        a.pending = 0
        sel.register(a.sock, selectors.EVENT_READ, a)
        active += 1
        n = min(window, len(a.requests)) if once else window
        now = perf()
        for _ in range(n):
            a.sent_at.append(now)
            a.sock.send(a.requests[a.next % len(a.requests)])
            a.next += 1
            a.pending += 1
    done = 0
    while active:
        events = sel.select(5.0)
        if not events:
            raise SystemExit("registrar stopped answering (%d associations waiting)" % active)
        # One clock reading per wake-up: in the guest every reading is a
        # system call (about 14 us) on the one CPU the registrar shares.
        now = perf()
        more = now < deadline if deadline is not None else None
        for key, _ in events:
            a = key.data
            sock = a.sock
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                if not data:
                    raise SystemExit("registrar closed association %d" % a.index)
                t = data[0]
                if t == KEEP_ALIVE:
                    # the runs set the keep-alive interval beyond their
                    # length: none should come; count them if one does
                    a.keepalives += 1
                    continue
                if t != kind:
                    a.bad += 1
                latencies.append(now - a.sent_at.popleft())
                a.pending -= 1
                done += 1
                if deadline is None:
                    more = a.next < len(a.requests)
                if more:
                    a.sent_at.append(now)
                    sock.send(a.requests[a.next % len(a.requests)])
                    a.next += 1
                    a.pending += 1
                elif a.pending == 0:
                    sel.unregister(sock)
                    active -= 1
                    break
    elapsed = time.perf_counter() - start
    sel.close()
    return done, elapsed, latencies


def worker(registrar, local, first_index, n_assocs, pes_per_assoc, pools, duration, window,
           barrier, results, cpu=None):
    """
    One client process: C{n_assocs} associations from address C{local},
    each registering C{pes_per_assoc} PEs (new registrations), then
    re-registering them for C{duration} seconds, then resolving random
    pools for C{duration} seconds.  Puts a dict of the phases' results
    into C{results}.
    """
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except (AttributeError, OSError):
            pass
    assocs = [Association(first_index + i, registrar, local) for i in range(n_assocs)]
    for a in assocs:
        a.requests = [
            registration(((a.index + 1) << 20) | (k + 1), (a.index * pes_per_assoc + k) % pools,
                         local, a.port)
            for k in range(pes_per_assoc)
        ]
    out = {}
    barrier.wait()
    out["register"] = run_phase(assocs, REGISTRATION_RESPONSE, window, once=True)
    barrier.wait()
    out["reregister"] = run_phase(assocs, REGISTRATION_RESPONSE, window, duration=duration)
    rng = random.Random(first_index)
    for a in assocs:
        a.requests = [encode(HandleResolution(pool_handle(rng.randrange(pools)))) for _ in range(64)]
    barrier.wait()
    out["resolve"] = run_phase(assocs, HANDLE_RESOLUTION_RESPONSE, window, duration=duration)
    out["bad"] = sum(a.bad for a in assocs)
    out["keepalives"] = sum(a.keepalives for a in assocs)
    results.put(out)
    barrier.wait()
    for a in assocs:
        a.close()
