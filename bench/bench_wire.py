#!/usr/bin/env python3
"""
Wire codec throughput: decode and encode rates (messages/s, one core) for
an ASAP Registration, an Endpoint Keep-Alive Ack and a Handle Resolution
Response with 16 PEs.

usage: python3 bench/bench_wire.py [--seconds S]
Prints a table and writes it to bench/results/wire.txt.
"""
import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rserpool.codes import PolicyType  # noqa: E402
from rserpool.wire import (  # noqa: E402
    EndpointKeepAliveAck,
    HandleResolutionResponse,
    Policy,
    PoolElement,
    Registration,
    SCTPTransport,
    decode,
    encode,
)


def pe(i):
    return PoolElement(
        0x10000000 + i,
        0x11111111,
        90000,
        SCTPTransport(7000 + i, ["10.0.0.%d" % (i + 1), "10.1.0.%d" % (i + 1)], 1),
        Policy.make(PolicyType.WEIGHTED_RANDOM, weight=10 + i),
    )


CASES = [
    ("Registration", Registration(b"EchoPool", pe(0))),
    ("Endpoint Keep-Alive Ack", EndpointKeepAliveAck(b"EchoPool", 0x10000000)),
    (
        "Handle Resolution Response, 16 PEs",
        HandleResolutionResponse(
            b"EchoPool", Policy.make(PolicyType.WEIGHTED_RANDOM, weight=10), [pe(i) for i in range(16)]
        ),
    ),
]


def rate(fn, arg, seconds):
    n = 0
    batch = 1000
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn(arg)
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()
    lines = [
        "rserpool wire codec, %s %s, %s" % (platform.python_implementation(), platform.python_version(), platform.machine()),
        "%-36s %8s %14s %14s" % ("message", "bytes", "decode msg/s", "encode msg/s"),
    ]
    for name, msg in CASES:
        data = encode(msg)
        assert decode(data, "asap") == msg
        d = rate(lambda b: decode(b, "asap"), data, args.seconds)
        e = rate(encode, msg, args.seconds)
        lines.append("%-36s %8d %14.0f %14.0f" % (name, len(data), d, e))
    text = "\n".join(lines)
    print(text)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "wire.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
