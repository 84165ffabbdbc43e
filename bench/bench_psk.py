#!/usr/bin/env python3
"""
What TLS-PSK costs a registrar: connections per second (TCP connect, TLS
handshake, one Handle Resolution and its answer) and Handle Resolutions
per second on one connection (closed loop), over plain TCP and over
TLS-PSK, with the registrar and the client in one process on loopback.

usage: python3 bench/bench_psk.py [--seconds S]
Prints a table and writes it to bench/results/psk.txt.
"""
import argparse
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import defer, protocol, reactor, task  # noqa: E402
from twisted.internet.endpoints import clientFromString, connectProtocol  # noqa: E402

from rserpool.codes import PolicyType  # noqa: E402
from rserpool.services import RegistrarService, make_config  # noqa: E402
from rserpool.transport.psk import PSKEndpoints  # noqa: E402
from rserpool.wire import (  # noqa: E402
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    HandleResolution,
    Policy,
    PoolElement,
    Registration,
    StreamDecoder,
    TCPTransport,
    encode,
)


class Client(protocol.Protocol):
    """
    Sends a request and waits for the answer; acknowledges the registrar's
    Endpoint Keep Alives (as a PE does).
    """

    def __init__(self):
        self.decoder = StreamDecoder("asap")
        self.waiting = None

    def dataReceived(self, data):
        for message in self.decoder.feed(data):
            if isinstance(message, EndpointKeepAlive):
                self.transport.write(encode(EndpointKeepAliveAck(
                    message.pool_handle, message.identifier)))
                continue
            d, self.waiting = self.waiting, None
            if d is not None:
                d.callback(message)

    def request(self, message):
        self.waiting = defer.Deferred()
        self.transport.write(encode(message))
        return self.waiting


@defer.inlineCallbacks
def run(kind, seconds, keys):
    psk = PSKEndpoints(keys) if kind == "psk" else None
    registrar = RegistrarService(
        make_config(log_events=False), asap_endpoints=["tcp:0:interface=127.0.0.1"], psk=psk)
    registrar.startService()
    ports = yield registrar.ready
    port = ports[0].getHost().port
    if kind == "psk":
        description = "psk:127.0.0.1:{}:keys={}".format(port, keys.replace(":", "\\:"))
    else:
        description = "tcp:127.0.0.1:{}".format(port)
    pe = Client()
    yield connectProtocol(clientFromString(reactor, description), pe)
    element = PoolElement(1, 0, 600000, TCPTransport(7, ("127.0.0.1",)),
                          Policy.make(PolicyType.ROUND_ROBIN))
    yield pe.request(Registration(b"bench", element))
    request = HandleResolution(b"bench")

    # Connections: connect, handshake, one resolution, close.
    count = 0
    start = time.process_time()
    wall = time.monotonic()
    while time.monotonic() - wall < seconds:
        client = Client()
        yield connectProtocol(clientFromString(reactor, description), client)
        yield client.request(request)
        client.transport.loseConnection()
        count += 1
    connections = count / (time.process_time() - start)
    yield task.deferLater(reactor, 0.2, lambda: None)

    # Resolutions on one connection.
    count = 0
    start = time.process_time()
    wall = time.monotonic()
    while time.monotonic() - wall < seconds:
        for _ in range(100):
            yield pe.request(request)
        count += 100
    resolutions = count / (time.process_time() - start)
    pe.transport.loseConnection()
    yield registrar.stopService()
    return connections, resolutions


@defer.inlineCallbacks
def main(seconds):
    directory = tempfile.mkdtemp()
    keys = os.path.join(directory, "bench.keys")
    with open(keys, "w") as f:
        f.write("bench {}\n".format(os.urandom(32).hex()))
    os.chmod(keys, 0o600)
    lines = [
        "TLS-PSK against plain TCP: registrar and client in one process, loopback",
        "python {} on {}, {} s per figure; rates per second of process CPU time".format(
            platform.python_version(), platform.platform(terse=True), seconds),
        "",
        "{:<6} {:>14} {:>14}".format("", "connections/s", "resolutions/s"),
    ]
    results = {}
    for kind in ("tcp", "psk"):
        results[kind] = yield run(kind, seconds, keys)
        lines.append("{:<6} {:>14,.0f} {:>14,.0f}".format(kind, *results[kind]))
    lines.append("")
    lines.append("TLS-PSK cost: {:.2f} ms more per connection, {:.1f} us more per resolution".format(
        (1 / results["psk"][0] - 1 / results["tcp"][0]) * 1e3,
        (1 / results["psk"][1] - 1 / results["tcp"][1]) * 1e6))
    print("\n".join(lines))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "psk.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    failures = []

    def stop(result):
        if hasattr(result, "getTraceback"):
            failures.append(result)
            print(result.getTraceback(), file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: main(args.seconds).addBoth(stop))
    reactor.run()
    sys.exit(1 if failures else 0)
