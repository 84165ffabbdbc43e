#!/usr/bin/env python3
"""
Memory of concurrent ENRP handle table dumps (issue #14): a registrar that
holds PES pool elements, and CLIENTS connections that each ask it for its
handle table over ENRP (what ``rserpool dump`` and RSPLIB's ``hsdump`` do)
and then do not read the answers.

The registrar runs in a child process (its ENRP endpoint on 127.0.0.1);
the clients are plain sockets of this process, spread over the loopback
addresses 127.0.0.1 to 127.0.0.8 (a registrar caps connections per source
address).  The figure is the growth of the registrar's resident memory
(VmRSS) once it has answered all it will answer, per mode:

``stall``
    every client sends one Handle Table Request and never reads;
``pipeline``
    every client sends, at once, as many Handle Table Requests as the
    whole table takes (PES / 128 + 1), and never reads;
``read``
    every client downloads the whole table, all at once (the peak is
    reported).

Run against another source tree (``--source DIR``, e.g. a ``git archive``
of an older commit) to compare::

    git archive 901acaf | tar -x -C /tmp/before
    python3 bench/bench_dump_memory.py --source /tmp/before
    python3 bench/bench_dump_memory.py

Usage::

    python3 bench/bench_dump_memory.py [--pes 100000] [--clients 200]
        [--modes stall,pipeline,read] [--source DIR]
"""
import argparse
import os
import select
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: The registrar: a RegistrarService with only ENRP, filled with PES PEs
#: whose home is another registrar; prints "ready PORT" once listening.
SERVE = r"""
import ipaddress, sys
from twisted.internet import reactor
from rserpool import tap
from rserpool.asap.registrar import UserTransport
from rserpool.handlespace import PolicySettings, TimerCode
from rserpool.wire import TCPTransport

count = int(sys.argv[1])
options = tap.Options()
options.parseOptions(["--asap", "tcp:0:interface=127.0.0.1", "--enrp", "tcp:0:interface=127.0.0.1",
                      "--id", "0x5eed", "--quiet", "--mentor-discovery-timeout", "0.1"])
service = tap.makeService(options)
hs = service.registrar.handlespace
loop = ipaddress.ip_address("127.0.0.1")
policy = PolicySettings.from_values(1, ())
for i in range(count):
    hs.register(b"pool%d" % (i % 100), 0x100000 + i, home_registrar=0x77, policy=policy,
                user_transport=UserTransport(TCPTransport(7000 + i % 1000, (loop,))), now=0.0,
                registration_life=3600000, asap_transport=TCPTransport(40000 + i % 20000, (loop,)),
                timer=(TimerCode.EXPIRY, 1e9))

def ready(ports):
    print("ready", service.enrp_ports[0].getHost().port, flush=True)

service.startService()
service.ready.addCallback(ready)
reactor.run()
"""

#: ENRP Handle Table Request, sender 0x77, receiver 0 (RFC 5353 section 2.2).
REQUEST = bytes((0x02, 0x00, 0x00, 0x0C)) + (0x77).to_bytes(4, "big") + bytes(4)


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def settle(pid, limit=30.0, step=0.5):
    """
    The registrar's resident memory once it stops changing (three samples
    within 1 %), or after C{limit} seconds: (bytes, peak seen).
    """
    samples = [rss(pid)]
    peak = samples[0]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(step)
        samples.append(rss(pid))
        peak = max(peak, samples[-1])
        last = samples[-3:]
        if len(last) == 3 and max(last) - min(last) <= 0.01 * max(last):
            break
    return samples[-1], peak


def start(source, pes):
    env = dict(os.environ, PYTHONPATH=source)
    child = subprocess.Popen([sys.executable, "-c", SERVE, str(pes)], stdout=subprocess.PIPE,
                             env=env, cwd=source)
    line = child.stdout.readline().split()
    if not line or line[0] != b"ready":
        child.kill()
        raise SystemExit("the registrar did not start")
    return child, int(line[1])


def connect(port, clients):
    out = []
    for i in range(clients):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.%d" % (i % 8 + 1), 0))
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def read_all(sockets, pes, limit=120.0):
    """
    Full dumps on every socket at once: ask again after each answer until
    one without the M flag (the requester's side of RFC 5353 section 3.2.3).
    """
    buffers = {s: b"" for s in sockets}
    open_ = set(sockets)
    deadline = time.monotonic() + limit
    for s in sockets:
        s.sendall(REQUEST)
    while open_ and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_), [], [], 1.0)
        for s in ready:
            data = s.recv(1 << 16)
            if not data:
                open_.discard(s)
                continue
            buf = buffers[s] + data
            while len(buf) >= 4:
                length = int.from_bytes(buf[2:4], "big")
                size = (length + 3) & ~3
                if len(buf) < size:
                    break
                flags = buf[1]
                buf = buf[size:]
                if flags & 0x02:
                    s.sendall(REQUEST)
                else:
                    open_.discard(s)
            buffers[s] = buf
    return len(sockets) - len(open_)


def measure(source, pes, clients, mode):
    child, port = start(source, pes)
    sockets = []
    try:
        base, _ = settle(child.pid)
        sockets = connect(port, clients)
        if mode == "stall":
            for s in sockets:
                s.sendall(REQUEST)
        elif mode == "pipeline":
            burst = REQUEST * (pes // 128 + 1)
            for s in sockets:
                s.setblocking(False)
                try:
                    s.send(burst)
                except BlockingIOError:
                    pass
        if mode == "read":
            import threading
            peak = [base]
            done = threading.Event()

            def watch():
                while not done.is_set():
                    peak[0] = max(peak[0], rss(child.pid))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch)
            watcher.start()
            finished = read_all(sockets, pes)
            done.set()
            watcher.join()
            return base, peak[0], "%d/%d complete" % (finished, clients)
        after, peak = settle(child.pid)
        return base, max(after, peak), ""
    finally:
        for s in sockets:
            s.close()
        child.kill()
        child.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--pes", type=int, default=100000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--modes", default="stall,pipeline,read")
    parser.add_argument("--source", default=ROOT, help="the source tree to run [this one]")
    args = parser.parse_args()
    print("source %s, %d PEs, %d connections" % (args.source, args.pes, args.clients))
    print("%-9s %10s %10s %10s %12s  %s" % ("mode", "base MB", "peak MB", "grown MB",
                                           "KB/conn", ""))
    for mode in args.modes.split(","):
        base, peak, note = measure(os.path.abspath(args.source), args.pes, args.clients, mode)
        grown = peak - base
        print("%-9s %10.1f %10.1f %10.1f %12.1f  %s" % (
            mode, base / 1e6, peak / 1e6, grown / 1e6, grown / 1024.0 / args.clients, note))


if __name__ == "__main__":
    main()
