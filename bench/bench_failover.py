"""
Failover time of the Enhanced Mode session layer over loopback.

A registrar runs in this process; echo pool elements run as separate
``rserpool pe`` processes.  A pool user sends a request every
``--period`` seconds.  Each run SIGKILLs the PE serving it and measures the
time from the kill to the first reply from another PE; the killed PE is
replaced before the next run.

    python3 bench/bench_failover.py --runs 50                 # default timers
    python3 bench/bench_failover.py --runs 50 --tight         # tightened timers

Default timers: heartbeat 30 s (3 missed), re-registration 30 s, registrar
keep-alive 5 s + 5 s, PU request timeout 3 s.  Tightened: heartbeat 0.2 s
(3 missed), registrar keep-alive 0.5 s + 0.5 s.  On loopback a killed
process's sockets are closed by the kernel, so the PU and the registrar
learn of the death from the connection's end rather than from a timer.
"""
import argparse
import json
import os
import signal
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import defer, protocol, reactor, task  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402

from rserpool.pu import PoolClientEndpoint, PoolUser  # noqa: E402
from rserpool.services import RegistrarService, make_config  # noqa: E402


class PE(protocol.ProcessProtocol):
    def __init__(self):
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.out = b""

    def outReceived(self, data):
        self.out += data
        if b"registered" in self.out and not self.ready.called:
            self.ready.callback(int(self.out.split()[1], 16))

    def processEnded(self, reason):
        self.ended.callback(None)


class Pinger(Protocol):
    def __init__(self):
        self.waiter = None
        self.replies = 0

    def dataReceived(self, data):
        self.replies += 1
        w, self.waiter = self.waiter, None
        if w is not None:
            w.callback(time.perf_counter())


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


@defer.inlineCallbacks
def main(reactor, args):
    ka = (0.5, 0.5) if args.tight else (5.0, 5.0)
    registrar = RegistrarService(make_config(keep_alive_interval=ka[0], keep_alive_timeout=ka[1]),
                                 asap_endpoints=["tcp:0:interface=127.0.0.1"])
    registrar.startService()
    ports = yield registrar.ready
    asap = "tcp:127.0.0.1:%d" % ports[0].getHost().port
    heartbeat = 0.2 if args.tight else 30.0
    env = dict(os.environ, PYTHONPATH=ROOT)
    pes = {}

    def spawn():
        pe = PE()
        argv = [sys.executable, "-m", "rserpool.cli", "pe", "--handle", "BenchPool",
                "--registrar", asap, "--heartbeat", str(heartbeat), "echo"]
        reactor.spawnProcess(pe, sys.executable, argv, env=env, path=ROOT)
        return pe.ready.addCallback(lambda pe_id: pes.__setitem__(pe_id, pe))

    yield defer.gatherResults([spawn() for _ in range(args.pes)])
    pu = PoolUser(reactor, registrars=[asap])
    endpoint = PoolClientEndpoint(reactor, pu, "BenchPool", enhanced=True,
                                  session_options={"heartbeat_interval": heartbeat})
    client = yield endpoint.connect(Factory.forProtocol(Pinger))
    session = client.transport._session
    times = []
    for run in range(args.runs):
        # Steady state: a reply from the current PE.
        client.waiter = defer.Deferred()
        client.transport.write(b"x")
        yield client.waiter
        victim = session.pe.identifier
        proc = pes.pop(victim)
        replaced = spawn()
        yield replaced
        client.waiter = defer.Deferred()
        t0 = time.perf_counter()
        os.kill(proc.transport.pid, signal.SIGKILL)
        # Keep asking until another PE answers (a request written to the
        # dying connection may be lost).
        answered = client.waiter

        def poke():
            if not answered.called:
                if session.link is not None and session.pe.identifier == victim:
                    pass
                else:
                    client.transport.write(b"x")

        poker = task.LoopingCall(poke)
        poker.start(args.period, now=False)
        t1 = yield answered
        poker.stop()
        yield proc.ended
        if session.pe.identifier == victim:
            raise RuntimeError("answered by the killed PE")
        times.append(t1 - t0)
    pu.close()
    client.transport.loseConnection()
    for pe in pes.values():
        pe.transport.signalProcess("TERM")
        yield pe.ended
    yield registrar.stopService()
    ms = [t * 1000 for t in times]
    result = {
        "timers": "tight" if args.tight else "default",
        "runs": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(statistics.mean(ms), 2),
        "max_ms": round(max(ms), 2),
    }
    print(json.dumps(result))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "failover-%s.json" % result["timers"]), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--pes", type=int, default=3)
    parser.add_argument("--tight", action="store_true", help="tightened timers")
    parser.add_argument("--period", type=float, default=0.002,
                        help="seconds between requests while failing over")
    task.react(main, [parser.parse_args()])
