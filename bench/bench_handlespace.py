#!/usr/bin/env python3
"""
Benchmark of rserpool.handlespace: handle resolutions per second and
registrations per second for pools of 10, 1,000 and 100,000 PEs under Round
Robin, Weighted Random and Least Used, and memory per PE at 100,000 PEs.

Usage: python3 bench/bench_handlespace.py [--quick]

Prints a table and writes it to bench/results/handlespace.txt.  --quick runs
fewer operations per measurement (same pool sizes).  Rates are operations
per second of the process's CPU time (time.process_time), best of several
runs, so that other load on a shared machine does not count.

Columns: "resolve k=1" and "resolve k=3" are handle resolutions selecting
one and three PEs; "re-reg" is a re-registration of an existing PE with new
policy values (the steady state: every PE re-registers every 30 s);
"reg+dereg" is the registration of a new PE plus the deregistration of a
random old one, keeping the pool at its size.
"""
import argparse
import gc
import os
import platform
import random
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from rserpool.codes import PolicyType  # noqa: E402
from rserpool.handlespace import Handlespace, PolicySettings  # noqa: E402

SIZES = (10, 1000, 100000)
HANDLE = b"benchmark-pool"
SCTP = 0x0004


class Transport:
    """
    A user transport as the registrar would pass it (its own object).
    """

    __slots__ = ("transport_protocol", "control_channel")

    def __init__(self):
        self.transport_protocol = SCTP
        self.control_channel = False


def make_policy(policy_type, rng):
    if policy_type == PolicyType.ROUND_ROBIN:
        return PolicySettings(policy_type)
    if policy_type == PolicyType.WEIGHTED_RANDOM:
        return PolicySettings(policy_type, weight=rng.randrange(1, 100))
    return PolicySettings(policy_type, load=rng.randrange(0, 0xFFFFFFFF))


#: Simulated time between two registrations of a measurement (seconds): every
#: registration gets its own timer time, as with a real clock.
STEP = 1e-4


def owner_of(index):
    return 1 + index % 4


#: The connection keys PEs register over (the registrar's connection objects).
CONNECTIONS = [("assoc", i) for i in range(64)]


def connection_of(index):
    return CONNECTIONS[index % 64]


def build(policy_type, size, seed=1):
    rng = random.Random(seed)
    hs = Handlespace(random.Random(seed))
    transport = Transport()
    ids = rng.sample(range(1, 2 ** 32), size)
    for i, pe_id in enumerate(ids):
        hs.register(
            HANDLE,
            pe_id,
            home_registrar=owner_of(i),
            policy=make_policy(policy_type, rng),
            user_transport=transport,
            now=float(i) * 1e-3,
            registration_life=30000,
            connection=connection_of(i),
        )
    return hs, ids, rng


def best_of(repeats, function):
    best = None
    for _ in range(repeats):
        gc.collect()
        # CPU time of this process: the machine is shared, and waiting for
        # the CPU is not the handlespace's cost.
        start = time.process_time()
        count = function()
        elapsed = time.process_time() - start
        rate = count / elapsed
        best = rate if best is None or rate > best else best
    return best


def measure(policy_type, size, operations, repeats):
    """
    The four rates for one policy and pool size.

    Every measurement does the same operation mix at every pool size: the
    simulated clock advances by L{STEP} per registration (so each
    registration sets a timer at a time of its own, as it does in a
    registrar), and a re-registering PE keeps its owner and connection (the
    steady state).  Only the pool size differs.
    """
    hs, ids, rng = build(policy_type, size)
    select = hs.select
    register = hs.register
    deregister = hs.deregister
    # The registrar asks for the next timer time after every registration
    # and deregistration (to reschedule its timer): part of the operation.
    next_timer_time = hs.next_timer_time
    transport = Transport()
    clock = [1000.0]

    def resolve_1():
        for _ in range(operations):
            select(HANDLE, 1)
        return operations

    def resolve_3():
        for _ in range(operations):
            select(HANDLE, 3)
        return operations

    # Re-registration: an existing PE registers again over its connection,
    # with new policy values (the steady state: every PE re-registers every
    # 30 s).
    policies = [make_policy(policy_type, rng) for _ in range(256)]
    indexes = [rng.randrange(size) for _ in range(operations)]
    targets = [(ids[i], owner_of(i), connection_of(i)) for i in indexes]

    def reregister():
        base = clock[0]
        for i, (pe_id, owner, connection) in enumerate(targets):
            register(
                HANDLE,
                pe_id,
                home_registrar=owner,
                policy=policies[i & 255],
                user_transport=transport,
                now=base + i * STEP,
                registration_life=30000,
                connection=connection,
            )
            next_timer_time()
        clock[0] = base + operations * STEP
        return operations

    # Churn: a new PE registers and a random old one deregisters, keeping
    # the pool at its size.  Counted as one registration per pair.
    live = list(ids)
    taken = set(ids)
    fresh = (pe_id for pe_id in range(2 ** 32 - 1, 0, -1) if pe_id not in taken)

    def churn():
        base = clock[0]
        randrange = rng.randrange
        for i in range(operations):
            new_id = next(fresh)
            register(
                HANDLE,
                new_id,
                home_registrar=1 + (i & 3),
                policy=policies[i & 255],
                user_transport=transport,
                now=base + i * STEP,
                registration_life=30000,
                connection=CONNECTIONS[i & 63],
            )
            index = randrange(size)
            old = live[index]
            live[index] = new_id
            next_timer_time()
            deregister(HANDLE, old)
            next_timer_time()
        clock[0] = base + operations * STEP
        return operations

    result = {
        "resolve1": best_of(repeats, resolve_1),
        "resolve3": best_of(repeats, resolve_3),
        "rereg": best_of(repeats, reregister),
        "churn": best_of(repeats, churn),
    }
    assert len(hs) == size
    if size <= 1000:
        hs.verify()
    return result


def memory_per_pe(policy_type, size):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    hs, ids, rng = build(policy_type, size)
    del ids, rng
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(hs) == size
    return (after - before) / size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations")
    args = parser.parse_args(argv)
    operations = 5000 if args.quick else 50000
    repeats = 2 if args.quick else 5
    policies = (
        PolicyType.ROUND_ROBIN,
        PolicyType.WEIGHTED_RANDOM,
        PolicyType.LEAST_USED,
    )
    lines = []

    def out(line=""):
        print(line, flush=True)
        lines.append(line)

    out("rserpool.handlespace benchmark")
    out(
        "python {} on {} ({}), {} operations per measurement, best of {}".format(
            platform.python_version(),
            platform.machine(),
            platform.platform(terse=True),
            operations,
            repeats,
        )
    )
    out()
    header = "{:<15} {:>7} {:>12} {:>12} {:>12} {:>12}".format(
        "policy", "PEs", "resolve k=1", "resolve k=3", "re-reg", "reg+dereg"
    )
    out("rates in operations per second of process CPU time")
    out(header)
    out("-" * len(header))
    results = {}
    for policy_type in policies:
        for size in SIZES:
            r = measure(policy_type, size, operations, repeats)
            results[(policy_type, size)] = r
            out(
                "{:<15} {:>7} {:>12,.0f} {:>12,.0f} {:>12,.0f} {:>12,.0f}".format(
                    policy_type.name.lower(),
                    size,
                    r["resolve1"],
                    r["resolve3"],
                    r["rereg"],
                    r["churn"],
                )
            )
    out()
    out("cost at 100,000 PEs relative to 10 PEs (time per operation; target <= 2.0)")
    header = "{:<15} {:>12} {:>12} {:>12} {:>12}".format(
        "policy", "resolve k=1", "resolve k=3", "re-reg", "reg+dereg"
    )
    out(header)
    out("-" * len(header))
    worst = 0.0
    for policy_type in policies:
        small, large = results[(policy_type, 10)], results[(policy_type, 100000)]
        ratios = [small[key] / large[key] for key in ("resolve1", "resolve3", "rereg", "churn")]
        worst = max(worst, *ratios)
        out("{:<15} {:>12.2f} {:>12.2f} {:>12.2f} {:>12.2f}".format(policy_type.name.lower(), *ratios))
    out()
    out("memory per PE at 100,000 PEs (tracemalloc; handlespace structures and")
    out("policy settings, not the caller's transport objects; target <= 1024 B)")
    memory = {}
    for policy_type in policies:
        memory[policy_type] = memory_per_pe(policy_type, 100000)
        out("{:<15} {:>8.0f} bytes".format(policy_type.name.lower(), memory[policy_type]))
    out()
    slowest_single = min(results[(p, s)]["resolve1"] for p in policies for s in SIZES)
    out("targets:")
    out(
        "  single-PE selections/s >= 50,000: slowest {:,.0f} -> {}".format(
            slowest_single, "met" if slowest_single >= 50000 else "MISSED"
        )
    )
    out(
        "  cost(100,000) <= 2 x cost(10): worst ratio {:.2f} -> {}".format(
            worst, "met" if worst <= 2.0 else "MISSED"
        )
    )
    most = max(memory.values())
    out(
        "  memory <= 1 KiB per PE: largest {:.0f} bytes -> {}".format(
            most, "met" if most <= 1024 else "MISSED"
        )
    )
    results_dir = os.path.join(HERE, "results")
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "handlespace.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
