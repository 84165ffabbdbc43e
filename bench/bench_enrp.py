#!/usr/bin/env python3
"""
ENRP benchmark (RFC 5353): three figures.

1. **sync**: the time a new registrar takes to download a handlespace of N
   PEs from its mentor (List Request, then Handle Table Requests following
   the M flag, 128 PEs per response by default).  The mentor and the
   newcomer are two C{RegistrarService}s in one process on the real
   reactor, joined by loopback TCP; the mentor's handlespace is filled
   directly (as from PEs registered with it).  Measured from the
   newcomer's start to its "ready" (last Handle Table Response applied).
2. **takeover**: the time from SIGKILL of a registrar to the moment every
   one of its PEs is owned by a live registrar in both survivors'
   handlespaces, with three ``twistd -n enrp`` processes and 100 PEs (raw
   TCP clients in one child process that wait before re-registering, so
   the takeover, not PE hunting, moves them).  Polled every 0.1 s with
   Handle Table Requests.
3. **bytes**: ENRP bytes per PE update, in an in-memory three-registrar
   cluster (real codec): Handle Update ADD_PE and DEL_PE per peer, for a
   PE with a TCP user transport in a 5-byte pool handle.

Usage::

    python3 bench/bench_enrp.py [--sizes 10000,100000] [--repeat 3]
        [--takeover-timers fast,default]

Results are printed and written to bench/results/enrp.json.
"""
import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import ipaddress  # noqa: E402

from twisted.internet import defer, protocol, reactor, task  # noqa: E402

from rserpool.asap.registrar import UserTransport  # noqa: E402
from rserpool.asap.scope import Scope  # noqa: E402
from rserpool.enrp import ENRPConfig  # noqa: E402
from rserpool.enrp.memory import MemoryNetwork  # noqa: E402
from rserpool.handlespace import PolicySettings, TimerCode  # noqa: E402
from rserpool.services import RegistrarService, make_config  # noqa: E402
from rserpool.wire import TCPTransport  # noqa: E402

LOOP = ipaddress.ip_address("127.0.0.1")


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fill(handlespace, owner, count, pools=100):
    policy = PolicySettings.from_values(1, ())
    now = reactor.seconds()
    for i in range(count):
        pe_id = 0x100000 + i
        handlespace.register(
            b"pool%d" % (i % pools), pe_id, home_registrar=owner, policy=policy,
            user_transport=UserTransport(TCPTransport(7000 + i % 1000, (LOOP,))), now=now,
            registration_life=3600000, asap_transport=TCPTransport(40000 + i % 20000, (LOOP,)),
            timer=(TimerCode.EXPIRY, now + 3600.0))


@defer.inlineCallbacks
def sync_once(size, per_response):
    """
    One mentor with C{size} PEs, one newcomer: seconds to synchronise.
    """
    mentor_port = free_port()
    enrp = ENRPConfig(mentor_discovery_timeout=600.0, max_elements_per_ht_request=per_response)
    mentor = RegistrarService(
        make_config(0x11, log_events=False, min_address_scope=Scope.LOOPBACK),
        asap_endpoints=["tcp:0:interface=127.0.0.1"],
        enrp_endpoint="tcp:%d:interface=127.0.0.1" % mentor_port, enrp_config=enrp,
        # the newcomer is no static peer of the mentor's: admit loopback
        # (doc/enrp.rst, "Who is a peer")
        peer_networks=["127.0.0.0/8"])
    fill(mentor.registrar.handlespace, 0x11, size)
    mentor.startService()
    yield mentor.ready
    newcomer = RegistrarService(
        make_config(0x22, log_events=False, min_address_scope=Scope.LOOPBACK),
        asap_endpoints=["tcp:0:interface=127.0.0.1"],
        enrp_endpoint="tcp:0:interface=127.0.0.1",
        peers=["tcp:127.0.0.1:%d" % mentor_port], enrp_config=enrp)
    done = defer.Deferred()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    newcomer.startService()
    newcomer.enrp.on_ready.append(lambda from_mentor: done.called or done.callback(from_mentor))
    from_mentor = yield done
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    got = len(newcomer.registrar.handlespace)
    yield newcomer.stopService()
    yield mentor.stopService()
    assert from_mentor and got == size, (from_mentor, got, size)
    return elapsed, cpu


@defer.inlineCallbacks
def bench_sync(sizes, repeat, per_response):
    out = []
    for size in sizes:
        runs = []
        for _ in range(repeat):
            elapsed, cpu = yield sync_once(size, per_response)
            runs.append((elapsed, cpu))
        best = min(runs)
        row = {"pes": size, "per_response": per_response,
               "seconds_median": statistics.median(r[0] for r in runs),
               "seconds_best": best[0], "cpu_seconds_best": best[1],
               "pes_per_second": size / best[0], "runs": repeat}
        print("sync %7d PEs, %d per response: median %.2f s, best %.2f s (%.0f PEs/s)" % (
            size, per_response, row["seconds_median"], best[0], row["pes_per_second"]))
        out.append(row)
    return out


class _Lines(protocol.ProcessProtocol):
    """
    A child process whose output is searched for lines the benchmark waits
    for (stdout and stderr together).
    """

    def __init__(self):
        self.out = b""
        self.ended = defer.Deferred()
        self.waiting = []

    def outReceived(self, data):
        self.out += data
        for text, d in list(self.waiting):
            if text in self.out:
                self.waiting.remove((text, d))
                d.callback(None)

    errReceived = outReceived

    def wait_for(self, text, timeout):
        d = defer.Deferred()
        if text in self.out:
            d.callback(None)
        else:
            self.waiting.append((text, d))
        return d.addTimeout(timeout, reactor)

    def processEnded(self, reason):
        self.ended.callback(None)


@defer.inlineCallbacks
def takeover_once(timers):
    from tests.test_enrp_integration import POOLS, SWARM, dump

    enrp = [free_port() for _ in range(3)]
    asap = [free_port() for _ in range(3)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    processes = []
    try:
        for i in range(3):
            args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                    "--pidfile=", "enrp", "--id", str(i + 1), "--quiet",
                    "--asap", "tcp:%d:interface=127.0.0.1" % asap[i],
                    "--enrp", "tcp:%d:interface=127.0.0.1" % enrp[i],
                    "--keep-alive-interval", "5", "--keep-alive-timeout", "5"]
            for name, value in timers.items():
                args += ["--" + name, str(value)]
            for j in range(3):
                if j != i:
                    args += ["--peer", "tcp:127.0.0.1:%d" % enrp[j]]
            p = _Lines()
            p.transport_ = reactor.spawnProcess(p, sys.executable, args, env=env, path=ROOT)
            processes.append(p)
        for p in processes:
            yield p.wait_for(b"ENRP server", 60)
        swarm = _Lines()
        swarm.transport_ = reactor.spawnProcess(
            swarm, sys.executable,
            [sys.executable, "-c", SWARM, json.dumps(asap), "100", str(POOLS), "600", "all"],
            env=env, path=ROOT)
        processes.append(swarm)
        yield swarm.wait_for(b"registered", 60)
        for _ in range(300):
            views = yield defer.gatherResults([dump(p) for p in enrp])
            if all(len(v) == 100 for v in views) and views[0] == views[1] == views[2]:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        victims = sum(1 for home in views[0].values() if home == 3)
        processes[2].transport_.signalProcess("KILL")
        t0 = reactor.seconds()
        for _ in range(600):
            views = yield defer.gatherResults([dump(p) for p in enrp[:2]])
            if all(len(v) == 100 and set(v.values()) <= {1, 2} for v in views):
                return reactor.seconds() - t0, victims
            yield task.deferLater(reactor, 0.1, lambda: None)
        raise RuntimeError("no adoption within 60 s")
    finally:
        for p in processes:
            if not p.ended.called:
                try:
                    p.transport_.signalProcess("KILL")
                except Exception:
                    pass
                yield p.ended


TAKEOVER_TIMERS = {
    "fast": {"peer-heartbeat-cycle": 0.3, "peer-max-time-last-heard": 1.0,
             "peer-max-time-no-response": 1.0, "takeover-expiry": 1.0,
             "mentor-discovery-timeout": 0.5},
    "default": {"mentor-discovery-timeout": 0.5},
}


@defer.inlineCallbacks
def bench_takeover(names, repeat):
    out = []
    for name in names:
        timers = TAKEOVER_TIMERS[name]
        names_map = {"peer-heartbeat-cycle": "heartbeat_cycle",
                     "peer-max-time-last-heard": "max_time_last_heard",
                     "peer-max-time-no-response": "max_time_no_response",
                     "takeover-expiry": "takeover_expiry"}
        config = ENRPConfig(**{names_map[k]: v for k, v in timers.items() if k in names_map})
        bound = (config.heartbeat_cycle * 1.125 + config.max_time_last_heard
                 + config.max_time_no_response + config.takeover_expiry)
        runs = []
        for _ in range(repeat):
            seconds, victims = yield takeover_once(timers)
            runs.append(seconds)
        row = {"timers": name, "settings": timers, "bound_seconds": bound,
               "seconds": runs, "median": statistics.median(runs), "victim_pes": victims}
        print("takeover (%s timers): %s s (median %.2f; bound %.2f), %d PEs adopted" % (
            name, ", ".join("%.2f" % r for r in runs), row["median"], bound, victims))
        out.append(row)
    return out


def bench_bytes(count=1000):
    clock = task.Clock()
    net = MemoryNetwork(clock)
    for i in (1, 2, 3):
        net.add_registrar(i, peers=list(range(1, i)))
    net.run(3.0)
    from rserpool.codes import ENRPType

    def updates():
        return sum(n for (sid, mtype, _), n in net.sent.items()
                   if mtype == ENRPType.HANDLE_UPDATE)

    before_bytes, before_n = net.enrp_bytes, updates()
    pes = []
    for k in range(count):
        pe = net.add_pe(10000 + k, handle=b"pool%d" % (k % 10))
        pe.register(net.registrars[1 + k % 3])
        pes.append(pe)
    net.run(0.2)
    add_bytes, add_n = net.enrp_bytes - before_bytes, updates() - before_n
    before_bytes, before_n = net.enrp_bytes, updates()
    for pe in pes:
        pe.kill()
    net.run(0.2)
    del_bytes, del_n = net.enrp_bytes - before_bytes, updates() - before_n
    row = {"pes": count, "peers_per_update": 2,
           "add_bytes_per_message": add_bytes / add_n, "add_bytes_per_pe": add_bytes / count,
           "del_bytes_per_message": del_bytes / del_n, "del_bytes_per_pe": del_bytes / count}
    print("bytes: ADD_PE %.0f B per message, %.0f B per PE (2 peers); DEL_PE %.0f B, %.0f B per PE"
          % (row["add_bytes_per_message"], row["add_bytes_per_pe"],
             row["del_bytes_per_message"], row["del_bytes_per_pe"]))
    return row


@defer.inlineCallbacks
def main(args):
    results = {"python": platform.python_version(), "machine": platform.machine()}
    results["bytes"] = bench_bytes()
    results["sync"] = yield bench_sync([int(x) for x in args.sizes.split(",")], args.repeat,
                                       args.per_response)
    names = [n for n in args.takeover_timers.split(",") if n]
    results["takeover"] = yield bench_takeover(names, args.takeover_repeat)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "enrp.json"), "w") as f:
        json.dump(results, f, indent=2)


def run():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-response", type=int, default=128)
    parser.add_argument("--takeover-timers", default="fast,default")
    parser.add_argument("--takeover-repeat", type=int, default=3)
    args = parser.parse_args()
    random.seed(5353)
    failures = []

    def go():
        d = main(args)
        d.addErrback(lambda f: failures.append(f) or f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    run()
