#!/usr/bin/env python3
"""
What the counting behind the registrar's metrics costs a handle
resolution (issue #16), in one process, no sockets: the ASAP machine and
its receiver driven with 1,000 resolutions of 100 pools (1,000 PEs), 50
times, best of 7 runs, with

* ``plain``: the receiver without the monitor (rserpool.receivers.ASAPReceiver,
  what sends goes straight to the connection);
* ``metered``: the registrar's own (rserpool.web.monitor): what is sent is
  counted and each resolution timed into the histogram.

The machine's own message counter is in both.  Usage::

    python3 bench/bench_counting.py
"""
import gc
import ipaddress
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import task  # noqa: E402

from rserpool.codes import PolicyType  # noqa: E402
from rserpool.receivers import ASAPReceiver  # noqa: E402
from rserpool.services import RegistrarService, make_config  # noqa: E402
from rserpool.interfaces import NotAvailable  # noqa: E402
from rserpool.wire import (  # noqa: E402
    HandleResolution,
    Policy,
    PoolElement,
    Registration,
    TCPTransport,
)


class Connection:
    mapping = "tcp"
    identity = None
    role = None

    def __init__(self, address):
        self.peer = (ipaddress.ip_address(address), 5000)
        self.peer_addresses = (self.peer[0],)
        self.peer_transport = TCPTransport(5000, (self.peer[0],))
        self.local = (ipaddress.ip_address("127.0.0.1"), 3863)

    def send(self, message):
        pass

    def send_encoded(self, data):
        pass

    def close(self):
        pass

    def rtt(self):
        raise NotAvailable("rtt", "tcp")


def run(metered, repeats=7, rounds=50):
    clock = task.Clock()
    service = RegistrarService(make_config(server_id=1), asap_endpoints=[], reactor=clock)
    registrar = service.registrar
    receiver = service.monitor.asap_receiver(registrar, clock, service.run) if metered \
        else ASAPReceiver(registrar, clock, service.run)
    pe = Connection("127.0.0.1")
    receiver.connection_made(pe)
    for i in range(1000):
        receiver.message_received(pe, Registration(b"pool%d" % (i % 100), PoolElement(
            i + 1, 0, 3600000, TCPTransport(7000, ("127.0.0.1",)),
            Policy.make(PolicyType.ROUND_ROBIN))))
    messages = [HandleResolution(b"pool%d" % (i % 100)) for i in range(1000)]
    pu = Connection("127.0.0.2")
    receiver.connection_made(pu)
    best = None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for _ in range(rounds):
            for m in messages:
                receiver.message_received(pu, m)
        each = (time.perf_counter() - start) / (rounds * len(messages))
        best = each if best is None else min(best, each)
    return best


def main():
    # In turn, three times each: the host may be busy with other work.
    plain, metered = [], []
    for _ in range(3):
        plain.append(run(False))
        metered.append(run(True))
    plain, metered = min(plain), min(metered)
    print("plain    %.2f us per handle resolution" % (plain * 1e6))
    print("metered  %.2f us per handle resolution (+%.2f us)" % (metered * 1e6,
                                                               (metered - plain) * 1e6))


if __name__ == "__main__":
    main()
