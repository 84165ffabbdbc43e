"""
The legitimate side of bench/attack.py: pool elements and a pool user that
go on with their business while a registrar is flooded, in one Twisted
process (started by attack.py; not meant to be run by hand).

 - C{--pes} PEs of pool C{legit}, one connection each from 127.0.0.1,
   registered and acknowledging every Endpoint Keep Alive; a PE whose
   connection goes reconnects after a second and registers again, as
   C{rserpool pe} does, and is counted as lost;
 - a pool user on one connection from 127.0.0.1 that resolves C{legit}
   C{--rate} times a second (open loop) and times each answer; an answer
   with at least one PE within C{--timeout} seconds is a success;
 - once a second, on the same connection, a census: a resolution asking
   for every PE, whose answer says how many legitimate PEs are registered;
 - C{--fresh-rate} times a second, a resolution over a new connection
   (connect, resolve, close): what a new pool user meets.

Each second it prints one JSON line of what happened in that second (see
L{Legit.report}).  With C{--psk FILE} every connection is TLS-PSK with
identity C{legit} of that key file.
"""
import argparse
import collections
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.endpoints import clientFromString, connectProtocol  # noqa: E402
from twisted.internet.protocol import Protocol  # noqa: E402

from rserpool.codes import PolicyType  # noqa: E402
from rserpool.wire import (  # noqa: E402
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    HandleResolution,
    HandleResolutionResponse,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
    StreamDecoder,
    TCPTransport,
    encode,
)

POOL = b"legit"
#: PE identifiers of the legitimate PEs: FIRST_ID + index.
FIRST_ID = 0x1E610000
ALL_ITEMS = 0xFFFFFFFF


def endpoint(port, psk):
    if psk:
        return clientFromString(
            reactor, "psk:host=127.0.0.1:port=%d:keys=%s:identity=legit:bindAddress=127.0.0.1"
            ":timeout=5" % (port, psk.replace(":", "\\:")))
    return clientFromString(reactor, "tcp:host=127.0.0.1:port=%d:bindAddress=127.0.0.1:timeout=5"
                            % port)


class Stats:
    """
    What happened in the current second.
    """

    def __init__(self):
        self.sent = 0
        self.ok = 0
        self.failed = collections.Counter()
        self.latencies = []
        self.fresh_sent = 0
        self.fresh_ok = 0
        self.fresh_failed = collections.Counter()
        self.fresh_latencies = []
        self.census = None
        self.keep_alives = 0


class PEProtocol(Protocol):
    def __init__(self, owner, index):
        self.owner = owner
        self.index = index
        self.decoder = StreamDecoder("asap")
        self.registered = False

    def connectionMade(self):
        port = self.transport.getHost().port
        element = PoolElement(FIRST_ID + self.index, 0, 3600000,
                              TCPTransport(port, ("127.0.0.1",)),
                              Policy.make(PolicyType.ROUND_ROBIN))
        self.transport.write(encode(Registration(POOL, element)))

    def dataReceived(self, data):
        for message in self.decoder.feed(data):
            if isinstance(message, EndpointKeepAlive):
                self.owner.stats.keep_alives += 1
                self.transport.write(encode(EndpointKeepAliveAck(
                    message.pool_handle, FIRST_ID + self.index)))
            elif isinstance(message, RegistrationResponse):
                if message.reject:
                    self.owner.pe_rejected += 1
                else:
                    self.registered = True

    def connectionLost(self, reason):
        self.owner.pe_lost(self)


class PUProtocol(Protocol):
    """
    The pool user's connection: answers come in the order of the requests.
    """

    def __init__(self, owner):
        self.owner = owner
        self.decoder = StreamDecoder("asap")
        self.waiting = collections.deque()

    def request(self, census=False):
        now = time.perf_counter()
        items = ALL_ITEMS if census else None
        self.waiting.append([now, census, False])
        self.transport.write(encode(HandleResolution(POOL, items)))

    def dataReceived(self, data):
        now = time.perf_counter()
        for message in self.decoder.feed(data):
            if not isinstance(message, HandleResolutionResponse) or not self.waiting:
                continue
            sent, census, expired = self.waiting.popleft()
            if census:
                if message.error is None:
                    self.owner.stats.census = len(message.pool_elements)
                continue
            if expired:
                continue
            stats = self.owner.stats
            if message.error is not None or not message.pool_elements:
                stats.failed["error answer"] += 1
            elif now - sent > self.owner.timeout:
                stats.failed["late"] += 1
            else:
                stats.ok += 1
                stats.latencies.append(round((now - sent) * 1000, 4))

    def expire(self, now):
        for entry in self.waiting:
            if entry[1] or entry[2]:
                continue
            if now - entry[0] <= self.owner.timeout:
                break
            entry[2] = True
            self.owner.stats.failed["no answer"] += 1

    def connectionLost(self, reason):
        for sent, census, expired in self.waiting:
            if not census and not expired:
                self.owner.stats.failed["connection lost"] += 1
        self.waiting.clear()
        self.owner.pu_lost()


class FreshProtocol(Protocol):
    def __init__(self, owner, started):
        self.owner = owner
        self.started = started
        self.decoder = StreamDecoder("asap")
        self.done = False

    def connectionMade(self):
        self.transport.write(encode(HandleResolution(POOL)))

    def dataReceived(self, data):
        for message in self.decoder.feed(data):
            if isinstance(message, HandleResolutionResponse) and not self.done:
                self.finish("error answer" if message.error is not None or not
                            message.pool_elements else None)
                self.transport.loseConnection()

    def finish(self, failure):
        if self.done:
            return
        self.done = True
        stats = self.owner.stats
        elapsed = time.perf_counter() - self.started
        if failure is None and elapsed > self.owner.timeout:
            failure = "late"
        if failure is None:
            stats.fresh_ok += 1
            stats.fresh_latencies.append(round(elapsed * 1000, 4))
        else:
            stats.fresh_failed[failure] += 1
        self.owner.fresh_open -= 1

    def connectionLost(self, reason):
        self.finish("closed without an answer")


class Legit:
    def __init__(self, port, pes, rate, fresh_rate, timeout, psk):
        self.port = port
        self.psk = psk
        self.timeout = timeout
        self.rate = rate
        self.fresh_rate = fresh_rate
        self.stats = Stats()
        self.pes = {}
        self.pe_count = pes
        self.pe_losses = 0
        self.pe_rejected = 0
        self.pu = None
        self.pu_losses = 0
        self.fresh_open = 0
        self.started = time.time()

    def start(self):
        for index in range(self.pe_count):
            self.connect_pe(index)
        self.connect_pu()
        self._calls = [
            task.LoopingCall(self.tick),
            task.LoopingCall(self.census),
            task.LoopingCall(self.report),
        ]
        self._calls[0].start(1.0 / self.rate, now=False)
        self._calls[1].start(1.0, now=False)
        self._calls[2].start(1.0, now=False)
        if self.fresh_rate:
            self._calls.append(task.LoopingCall(self.fresh))
            self._calls[-1].start(1.0 / self.fresh_rate, now=False)

    def connect_pe(self, index):
        protocol = PEProtocol(self, index)
        self.pes[index] = protocol
        d = connectProtocol(endpoint(self.port, self.psk), protocol)
        d.addErrback(lambda f: reactor.callLater(1.0, self.connect_pe, index))

    def pe_lost(self, protocol):
        if self.pes.get(protocol.index) is protocol:
            self.pe_losses += 1
            reactor.callLater(1.0, self.connect_pe, protocol.index)

    def connect_pu(self):
        protocol = PUProtocol(self)
        d = connectProtocol(endpoint(self.port, self.psk), protocol)

        def connected(p):
            self.pu = p

        d.addCallbacks(connected, lambda f: reactor.callLater(0.5, self.connect_pu))

    def pu_lost(self):
        self.pu = None
        self.pu_losses += 1
        reactor.callLater(0.5, self.connect_pu)

    def tick(self):
        self.stats.sent += 1
        if self.pu is None:
            self.stats.failed["not connected"] += 1
            return
        self.pu.request()
        self.pu.expire(time.perf_counter())

    def census(self):
        if self.pu is not None:
            self.pu.request(census=True)

    def fresh(self):
        if self.fresh_open >= 50:
            self.stats.fresh_sent += 1
            self.stats.fresh_failed["too many pending"] += 1
            return
        self.stats.fresh_sent += 1
        self.fresh_open += 1
        protocol = FreshProtocol(self, time.perf_counter())
        d = connectProtocol(endpoint(self.port, self.psk), protocol)
        timer = reactor.callLater(self.timeout * 2, self._fresh_timeout, protocol)

        def connected(p):
            return p

        def failed(f):
            protocol.finish("connect failed")

        def done(result):
            if timer.active() and protocol.done:
                timer.cancel()
            return result

        d.addCallbacks(connected, failed)
        d.addBoth(done)
        protocol._timer = timer

    def _fresh_timeout(self, protocol):
        if not protocol.done:
            protocol.finish("no answer")
            if protocol.transport is not None:
                protocol.transport.abortConnection()

    def report(self):
        """
        One JSON line: the second's resolutions (sent, ok, failures by
        reason, latencies in ms), fresh-connection resolutions, the last
        census (legitimate PEs the registrar holds), PEs registered by our
        own count, PE connections lost and PU connections lost since the
        start.
        """
        s, self.stats = self.stats, Stats()
        line = {
            "t": round(time.time(), 3),
            "sent": s.sent, "ok": s.ok, "failed": dict(s.failed), "lat": s.latencies,
            "fresh_sent": s.fresh_sent, "fresh_ok": s.fresh_ok,
            "fresh_failed": dict(s.fresh_failed), "fresh_lat": s.fresh_latencies,
            "census": s.census,
            "registered": sum(1 for p in self.pes.values() if p.registered),
            "pe_losses": self.pe_losses, "pe_rejected": self.pe_rejected,
            "pu_losses": self.pu_losses, "keep_alives": s.keep_alives,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pes", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--fresh-rate", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--psk", default=None)
    parser.add_argument("--lifetime", type=float, default=900.0,
                        help="exit after this many seconds whatever happens")
    args = parser.parse_args()
    legit = Legit(args.port, args.pes, args.rate, args.fresh_rate, args.timeout, args.psk)
    reactor.callWhenRunning(legit.start)
    reactor.callLater(args.lifetime, reactor.stop)
    reactor.run()


if __name__ == "__main__":
    main()
