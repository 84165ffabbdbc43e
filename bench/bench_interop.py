#!/usr/bin/env python3
"""
Our registrar against RSPLIB's ``rspregistrar``, over SCTP, side by side:
registrations and handle resolutions per second with the same load client
(bench/interop_client.py), at each PE count.

Runs inside the SCTP guest, as root (it adds a dummy interface with
site-local addresses, which RSPLIB requires)::

    ../shared/tools/sctp-vm python3 bench/bench_interop.py --pes 1000,10000

For each PE count and each registrar (a fresh process each time):

1. the client associations register PES PEs (new registrations, spread
   round robin over ``--pools`` pools): "reg/s";
2. for ``--duration`` seconds they re-register them (the PE's periodic
   re-registration, an update in place): "rereg/s";
3. for ``--duration`` seconds they resolve random pools (3 PEs per answer,
   both registrars' default): "HR/s".

Every association keeps ``--window`` requests outstanding.  The guest has
one CPU, shared by the registrar and the clients; "cpu" is the
registrar's share of it in that phase and "/cpu-s" the requests per
registrar CPU second (its capacity were it alone on a core).  The ratio
column is ours / RSPLIB's.  Results also go to bench/results/interop.json.
"""
import argparse
import json
import multiprocessing
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import interop_client  # noqa: E402
import interop_registrars as regs  # noqa: E402

PHASES = ("register", "reregister", "resolve")
REGISTRAR = "10.255.9.1"
CLIENT = "10.255.9.2"


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def run(which, pes, args, port):
    """
    One fresh registrar (C{"ours"} or C{"rsplib"}) under one load.
    """
    if which == "ours":
        argv = regs.ours_argv(REGISTRAR, port)
        env = regs.python_env()
    else:
        argv = regs.rsplib_argv(REGISTRAR, port, port + 1)
        env = None
    proc = regs.start(argv, REGISTRAR, port, env=env, what=which)
    try:
        assocs = args.associations
        n_proc = max(1, min(args.processes, assocs))
        per_proc = [assocs // n_proc + (1 if i < assocs % n_proc else 0) for i in range(n_proc)]
        pes_per_assoc = max(1, -(-pes // assocs))
        barrier = multiprocessing.Barrier(n_proc + 1)
        results = multiprocessing.Queue()
        workers = []
        first = 0
        for n in per_proc:
            w = multiprocessing.Process(
                target=interop_client.worker,
                args=((REGISTRAR, port), CLIENT, first, n, pes_per_assoc, args.pools,
                      args.duration, args.window, barrier, results),
            )
            w.start()
            workers.append(w)
            first += n
        marks = []
        for _ in range(3):
            barrier.wait(timeout=600)
            marks.append((time.perf_counter(), regs.cpu_seconds(proc.pid)))
        outs = [results.get(timeout=600)]
        marks.append((time.perf_counter(), regs.cpu_seconds(proc.pid)))
        outs += [results.get(timeout=600) for _ in workers[1:]]
        barrier.wait(timeout=60)
        for w in workers:
            w.join(60)
        alive = proc.poll() is None
    finally:
        regs.stop(proc)
    if not alive:
        raise SystemExit("%s registrar died during the run" % which)
    row = {"registrar": which, "pes": pes_per_assoc * assocs}
    for i, phase in enumerate(PHASES):
        done = sum(o[phase][0] for o in outs)
        elapsed = max(o[phase][1] for o in outs)
        lat = [x for o in outs for x in o[phase][2]]
        wall = marks[i + 1][0] - marks[i][0]
        cpu = marks[i + 1][1] - marks[i][1]
        row[phase] = {
            "requests": done,
            "seconds": round(elapsed, 3),
            "per_second": round(done / elapsed) if elapsed else 0,
            "per_cpu_second": round(done / cpu) if cpu else None,
            "registrar_cpu": round(cpu / wall, 2) if wall else None,
            "p50_ms": round(percentile(lat, 50) * 1000, 3),
            "p99_ms": round(percentile(lat, 99) * 1000, 3),
        }
    row["bad_responses"] = sum(o["bad"] for o in outs)
    row["keepalives"] = sum(o["keepalives"] for o in outs)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pes", default="1000,10000")
    parser.add_argument("--associations", type=int, default=8,
                        help="client associations in all")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--window", type=int, default=4,
                        help="requests outstanding per association")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternate the two registrars this many times per PE count")
    parser.add_argument("--only", choices=("ours", "rsplib"), default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_interop: run inside the SCTP guest as root "
                         "(../shared/tools/sctp-vm python3 bench/bench_interop.py)")
    multiprocessing.set_start_method("fork")
    remove = regs.add_dummy("rsbench0", [REGISTRAR, CLIENT])
    rows = []
    port = 20000
    header = "%-7s %6s | %7s %6s %5s %7s | %7s %6s %5s %7s | %7s %6s %5s %7s" % (
        "", "PEs", "reg/s", "p99ms", "cpu", "/cpu-s", "rereg/s", "p99ms", "cpu", "/cpu-s",
        "HR/s", "p99ms", "cpu", "/cpu-s",
    )
    try:
        print("rsplib-registrar %s; %d associations in %d processes, window %d, %g s phases"
              % (regs.rsplib_version(), args.associations, args.processes, args.window,
                 args.duration), flush=True)
        print(header)
        print("-" * len(header), flush=True)
        for pes in [int(x) for x in args.pes.split(",")]:
            which_list = [args.only] if args.only else ["ours", "rsplib"]
            for _ in range(args.repeat):
                for which in which_list:
                    port += 10
                    row = run(which, pes, args, port)
                    rows.append(row)
                    cells = []
                    for phase in PHASES:
                        r = row[phase]
                        cells.append("%7d %6.2f %5.2f %7s" % (
                            r["per_second"], r["p99_ms"], r["registrar_cpu"] or 0,
                            r["per_cpu_second"] or "-"))
                    print("%-7s %6d | %s" % (which, row["pes"], " | ".join(cells)), flush=True)
            if not args.only:
                print(ratio_line(rows, pes), flush=True)
    finally:
        remove()
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "interop.json"), "w") as f:
        json.dump(
            {
                "command": " ".join(["python3"] + sys.argv),
                "python": platform.python_version(),
                "rsplib": regs.rsplib_version(),
                "settings": vars(args),
                "rows": rows,
                "ratios": {str(p): ratios(rows, p) for p in sorted({r["pes"] for r in rows})},
            },
            f,
            indent=2,
        )


def ratios(rows, pes):
    """
    ours / RSPLIB for each phase's rate (wall clock), over the mean of
    the repeated runs at C{pes} (rounded PE counts are compared by the
    requested count's rows).
    """
    out = {}
    for phase in PHASES:
        for key in ("per_second", "per_cpu_second"):
            mine = [r[phase][key] for r in rows if r["registrar"] == "ours" and r["pes"] == pes]
            theirs = [r[phase][key] for r in rows if r["registrar"] == "rsplib" and r["pes"] == pes]
            if mine and theirs and all(mine) and all(theirs):
                out["%s %s" % (phase, key)] = round(
                    (sum(mine) / len(mine)) / (sum(theirs) / len(theirs)), 2)
    return out


def ratio_line(rows, pes):
    pes = rows[-1]["pes"]
    r = ratios(rows, pes)
    cells = []
    for phase in PHASES:
        cells.append("%7s %6s %5s %7s" % (
            "%.2f" % r["%s per_second" % phase] if "%s per_second" % phase in r else "-", "", "",
            "%.2f" % r["%s per_cpu_second" % phase] if "%s per_cpu_second" % phase in r else "-"))
    return "%-7s %6d | %s" % ("ratio", pes, " | ".join(cells))


if __name__ == "__main__":
    main()
