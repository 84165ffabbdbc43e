#!/usr/bin/env python3
"""
Registrar benchmark: registrations and handle resolutions per second over
loopback TCP, with N concurrent client connections spread over several
client processes, at a given number of registered PEs.

The registrar runs as ``twistd -n enrp`` in its own process, pinned to CPU
0; the client processes are pinned to the other CPUs, so they do not share
the registrar's core.  For each PE count and N:

1. a fresh registrar starts;
2. the N connections register PES / N PEs each (round robin pools of
   ``--pools`` pools): "register" is the rate of these new registrations;
3. for ``--duration`` seconds every connection re-registers its PEs
   (the PE's periodic re-registration, RFC 5352 section 3.1): "reregister";
4. for ``--duration`` seconds every connection sends Handle Resolutions for
   random pools (3 PEs per answer, the default): "resolve".

Each connection has one request outstanding (closed loop); latencies are
measured per request by the client.  Results are printed as a table and
written to bench/results/registrar.json.

Usage::

    python3 bench/bench_registrar.py [--pes 1000,100000] [--clients 1,16,128]
        [--duration 5] [--pools 100] [--processes 4]
"""
import argparse
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import registrar_client  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_registrar(port, cpu, extra=(), ready_port=None):
    """
    Start C{twistd enrp} with ASAP on C{port} (loopback), pinned to CPU
    C{cpu}, with C{extra} options; return once C{ready_port} (C{port} by
    default) takes connections.
    """
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", "-l", os.devnull, "enrp",
        "--asap", "tcp:%d:interface=127.0.0.1:backlog=1024" % port,
        "--quiet",
        # Keep-alives are not what is measured: push them out of the run.
        "--keep-alive-interval", "300",
        # Capacity is measured, not the limits per source (all load comes
        # from one address here): switch them off.
        "--max-pes-per-source", "0", "--max-pools-per-source", "0", "--max-pool-elements", "0",
        "--max-hr-rate-per-source", "0", "--max-connections-per-source", "0",
    ] + list(extra)

    def pin():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(argv, env=env, preexec_fn=pin, stdout=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", ready_port or port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("registrar exited with status %s" % proc.returncode)
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("registrar did not start")


def cpu_seconds(pid):
    """
    User plus system CPU seconds a process has used (Linux /proc).
    """
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))
    return values[k]


def run(pes, clients, duration, pools, processes, cpus):
    port = free_port()
    registrar_cpu = cpus[0] if cpus else None
    client_cpus = cpus[1:] or [None]
    proc = start_registrar(port, registrar_cpu)
    try:
        n_proc = max(1, min(processes, clients))
        per_proc = [clients // n_proc + (1 if i < clients % n_proc else 0) for i in range(n_proc)]
        pes_per_conn = max(1, -(-pes // clients))
        barrier = multiprocessing.Barrier(n_proc + 1)
        results = multiprocessing.Queue()
        workers = []
        first = 0
        for i, n in enumerate(per_proc):
            w = multiprocessing.Process(
                target=registrar_client.worker,
                args=(("127.0.0.1", port), first, n, pes_per_conn, pools, duration, barrier,
                      results, client_cpus[i % len(client_cpus)]),
            )
            w.start()
            workers.append(w)
            first += n
        marks = []
        for _ in range(3):
            barrier.wait(timeout=600)
            marks.append((time.perf_counter(), cpu_seconds(proc.pid)))
        outs = [results.get(timeout=600)]
        marks.append((time.perf_counter(), cpu_seconds(proc.pid)))
        outs += [results.get(timeout=600) for _ in workers[1:]]
        barrier.wait(timeout=60)
        for w in workers:
            w.join(60)
    finally:
        proc.terminate()
        proc.wait(10)
    row = {"pes": pes_per_conn * clients, "clients": clients, "processes": n_proc}
    for phase in ("register", "reregister", "resolve"):
        done = sum(o[phase][0] for o in outs)
        elapsed = max(o[phase][1] for o in outs)
        lat = [x for o in outs for x in o[phase][2]]
        row[phase] = {
            "requests": done,
            "seconds": round(elapsed, 3),
            "per_second": round(done / elapsed) if elapsed else 0,
            "p50_ms": round(percentile(lat, 50) * 1000, 3),
            "p99_ms": round(percentile(lat, 99) * 1000, 3),
        }
    for i, phase in enumerate(("register", "reregister", "resolve")):
        wall = marks[i + 1][0] - marks[i][0]
        row[phase]["registrar_cpu"] = round((marks[i + 1][1] - marks[i][1]) / wall, 2)
    row["bad_responses"] = sum(o["bad"] for o in outs)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pes", default="1000,100000")
    parser.add_argument("--clients", default="1,16,128")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4,
                        help="client processes (at most one per client)")
    args = parser.parse_args()
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = []
    if len(cpus) < 2:
        print("warning: fewer than 2 CPUs; clients share the registrar's core", file=sys.stderr)
        cpus = []
    multiprocessing.set_start_method("fork")
    rows = []
    header = "%8s %7s | %8s %7s %7s %4s | %8s %7s %7s %4s | %8s %7s %7s %4s" % (
        "PEs", "clients", "reg/s", "p50 ms", "p99 ms", "cpu", "rereg/s", "p50 ms", "p99 ms",
        "cpu", "HR/s", "p50 ms", "p99 ms", "cpu",
    )
    print(header)
    print("-" * len(header))
    for pes in [int(x) for x in args.pes.split(",")]:
        for clients in [int(x) for x in args.clients.split(",")]:
            row = run(pes, clients, args.duration, args.pools, args.processes, cpus)
            rows.append(row)
            cells = []
            for phase in ("register", "reregister", "resolve"):
                r = row[phase]
                cells.append("%8d %7.3f %7.3f %4.2f" % (
                    r["per_second"], r["p50_ms"], r["p99_ms"], r["registrar_cpu"]))
            print("%8d %7d | %s" % (row["pes"], clients, " | ".join(cells)), flush=True)
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "registrar.json"), "w") as f:
        json.dump(
            {
                "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": len(cpus),
                "rows": rows,
            },
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
