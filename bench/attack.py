#!/usr/bin/env python3
"""
Attack tool (issue #14): floods a registrar running with its default limits
while legitimate pool elements and a pool user go on, and measures what
the legitimate side sees and what the registrar spends.

For each flood, a fresh ``twistd -n enrp`` starts with nothing but its ASAP
and ENRP endpoints on 127.0.0.1 (free ports) and, for the TLS flood,
``--psk-keys``/``--psk-peer-keys``: every limit at its default.  Its log goes
to a file whose growth is measured.  Then:

1. the legitimate side (``bench/attack_legit.py``, one process, from
   127.0.0.1): ``--pes`` PEs of pool ``legit`` registered and answering
   keep-alives; a pool user resolving ``legit`` ``--rate`` times a second
   on one connection, and ``--fresh-rate`` times a second over a new
   connection each time; once a second a census of the legitimate PEs the
   registrar holds;
2. ``--quiet`` seconds with nothing else: the quiet figures;
3. ``--duration`` seconds of flood from ``--processes`` attacker processes
   (``bench/attack_flood.py``), each from its own source addresses
   127.(k+2).Y.Z, several connections per address;
4. ``--settle`` seconds after the attackers have gone.

By default the registrar is pinned to CPU 0 and everything else to CPU 1
(the registrar's host is not the attackers'), the legitimate process at
nice -10 so that its own timing is not the attackers' scheduling
(``--no-pin`` to let the scheduler place everything).

Figures per flood: the attackers' send rate (messages and connections per
second), the answers they got and what they were refused; what the
registrar's log says it refused; the legitimate resolutions' success and
p50/p99 latency, quiet and under the flood, and over new connections; the
legitimate PEs the registrar held (lowest census from the flood's start to
the end of the settle time) and PE connections lost; the registrar's
resident memory (VmRSS: before the flood, highest, after the settle time),
its CPU share during the flood, and the bytes its log grew by from the
flood's start to the end of the settle time.  A table goes to
``bench/results/attack.txt`` (``--out``), with a verdict per flood against
the bounds of ``doc/security.rst`` ("Floods").

Usage::

    python3 bench/attack.py --all                    # 16 floods, ~10 minutes
    python3 bench/attack.py --flood resolve [--duration 20] [--processes 2]
        [--addresses 4] [--connections 4]
    python3 bench/attack.py --all --json run.json    # keep every figure
    python3 bench/attack.py --report run.json [--rst]
    python3 bench/attack.py --flood slow --source DIR  # the registrar of DIR

The attackers' socket send buffers are 64 KiB (``attack_flood.py``): what
they queue would be on their own hosts, not in this host's TCP memory.
``--registrar-option`` adds a ``twistd enrp`` option, for experiments.

Only loopback addresses are used; every process started is stopped (its
process group killed) at the end, whatever happens.
"""
import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON = sys.executable

#: name: (attacker kind, addresses per process, connections per address,
#: TLS-PSK registrar, port attacked, what it is).
FLOODS = {
    "register": ("register", 4, 4, False, "asap", "registrations of new PEs, one pool"),
    "pools": ("pools", 4, 4, False, "asap", "registrations of new PEs, a pool each"),
    "resolve": ("resolve", 4, 4, False, "asap", "handle resolutions"),
    "unreachable": ("unreachable", 4, 4, False, "asap",
                    "Endpoint Unreachable of the legitimate PEs"),
    "slow": ("slow", 4, 64, False, "asap", "resolutions, answers never read"),
    "slow-max": ("slow", 4, 1024, False, "asap",
                 "resolutions, answers never read, 1024 connections an address"),
    "idle": ("idle", 4, 1100, False, "asap", "connections that send nothing"),
    "half": ("half", 4, 1100, False, "asap", "connections that send half a message"),
    "malformed": ("malformed", 4, 4, False, "asap", "mutated and random messages"),
    "tls": ("tls", 4, 1024, True, "asap",
            "garbage and unknown-identity ClientHellos, stalled handshakes"),
    "enrp": ("enrp", 4, 4, False, "enrp", "ENRP Handle Updates from strangers"),
    "enrp-malformed": ("malformed", 4, 4, False, "enrp",
                       "mutated and random messages to the ENRP port"),
    # The same from many addresses: what per-source limits cannot stop.
    "register-many": ("register", 64, 1, False, "asap",
                      "registrations of new PEs, 64 addresses a process"),
    "resolve-many": ("resolve", 64, 1, False, "asap",
                     "handle resolutions, 64 addresses a process"),
    "unreachable-many": ("unreachable", 64, 1, False, "asap",
                         "Endpoint Unreachable, 64 addresses a process"),
    "idle-many": ("idle", 64, 1100, False, "asap",
                  "silent connections, 64 addresses a process"),
}

#: What C{--all} runs, in order.
ALL = ["register", "pools", "resolve", "unreachable", "slow", "slow-max", "idle", "half",
       "malformed", "tls", "enrp", "enrp-malformed", "register-many", "resolve-many",
       "unreachable-many", "idle-many"]


# -- processes ----------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def preexec(cpu=None, nice=None):
    def run():
        if cpu is not None:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                pass
        if nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except OSError:
                pass
    return run


def stop(proc, grace=5.0):
    """
    Stop C{proc} and its process group: SIGTERM, then SIGKILL.
    """
    if proc is None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            if pgid is not None:
                os.killpg(pgid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    if pgid is not None:
        # Anything left in the group.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


#: The source tree the registrar runs from (C{--source}).
SOURCE = ROOT


def env(source=None):
    """
    The environment of a child: the registrar runs from C{SOURCE}, the
    clients from this tree.
    """
    first = source or ROOT
    return dict(os.environ, PYTHONPATH=first + os.pathsep + os.environ.get("PYTHONPATH", ""))


def write_keys(directory):
    """
    TLS-PSK key files: the PEs' and pool users' (identity C{legit}) and
    the registrars' own.
    """
    paths = {}
    for name, identity in (("asap.keys", "legit"), ("enrp.keys", "registrar-1")):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write("%s %s\n" % (identity, os.urandom(32).hex()))
        os.chmod(path, 0o600)
        paths[name] = path
    return paths


#: Options added to the registrar's command line (--registrar-option):
#: for experiments only; the figures are taken with none.
EXTRA_OPTIONS = []


def start_registrar(asap_port, enrp_port, log_path, psk, cpu):
    argv = [
        PYTHON, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", "-l", "-", "enrp",
        "--asap", "tcp:%d:interface=127.0.0.1" % asap_port,
        "--enrp", "tcp:%d:interface=127.0.0.1" % enrp_port,
    ]
    if psk:
        argv += ["--psk-keys", psk["asap.keys"], "--psk-peer-keys", psk["enrp.keys"]]
    argv += EXTRA_OPTIONS
    log = open(log_path, "wb")
    try:
        proc = subprocess.Popen(argv, env=env(SOURCE), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=os.path.dirname(log_path),
                                preexec_fn=preexec(cpu), start_new_session=True)
    finally:
        log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path, "rb") as f:
                tail = f.read()[-2000:].decode("utf-8", "replace")
            raise SystemExit("registrar exited with status %s:\n%s" % (proc.returncode, tail))
        with open(log_path, "rb") as f:
            if b"ready; accepting" in f.read():
                return proc
        time.sleep(0.1)
    stop(proc)
    raise SystemExit("registrar did not start within 30 s")


class Legit:
    """
    The legitimate side's process and the lines it prints.
    """

    def __init__(self, args, port, psk, cpu):
        argv = [PYTHON, os.path.join(HERE, "attack_legit.py"), "--port", str(port),
                "--pes", str(args.pes), "--rate", str(args.rate),
                "--fresh-rate", str(args.fresh_rate), "--timeout", str(args.timeout)]
        if psk:
            argv += ["--psk", psk["asap.keys"]]
        self.proc = subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL,
                                     preexec_fn=preexec(cpu, -10 if args.pin else None),
                                     start_new_session=True)
        self.lines = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                pass

    def wait_ready(self, pes, limit=30.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.lines and self.lines[-1]["registered"] == pes and \
                    self.lines[-1]["census"] == pes:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def window(self, start, end):
        """
        The lines of the seconds between C{start} and C{end} (wall time).
        """
        return [line for line in self.lines if start + 0.9 < line["t"] <= end + 0.1]


class Sampler:
    """
    Samples the registrar's resident memory and CPU time.
    """

    def __init__(self, pid, step=0.25):
        self.pid = pid
        self.step = step
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            rss = vmrss(self.pid)
            if rss is None:
                return
            self.samples.append((time.time(), rss))
            self._stop.wait(self.step)

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def peak(self, start, end):
        values = [r for t, r in self.samples if start <= t <= end]
        return max(values) if values else None


def vmrss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


# -- figures --------------------------------------------------------------------

def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))
    return values[k]


def legit_figures(lines):
    ok = sum(line["ok"] for line in lines)
    failed = {}
    for line in lines:
        for reason, n in line["failed"].items():
            failed[reason] = failed.get(reason, 0) + n
    total = ok + sum(failed.values())
    latencies = [x for line in lines for x in line["lat"]]
    fresh_ok = sum(line["fresh_ok"] for line in lines)
    fresh_failed = {}
    for line in lines:
        for reason, n in line["fresh_failed"].items():
            fresh_failed[reason] = fresh_failed.get(reason, 0) + n
    fresh_total = fresh_ok + sum(fresh_failed.values())
    fresh_latencies = [x for line in lines for x in line["fresh_lat"]]
    census = [line["census"] for line in lines if line["census"] is not None]
    return {
        "requests": total,
        "ok_pct": 100.0 * ok / total if total else None,
        "failed": failed,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else None,
        "fresh_requests": fresh_total,
        "fresh_ok_pct": 100.0 * fresh_ok / fresh_total if fresh_total else None,
        "fresh_failed": fresh_failed,
        "fresh_p50": percentile(fresh_latencies, 50),
        "fresh_p99": percentile(fresh_latencies, 99),
        "census_min": min(census) if census else None,
        "censuses": len(census),
        "missing_census": len(lines) - len(census),
    }


#: Log lines that say what was refused, and how to count them.
REFUSALS = [
    (re.compile(r"refused (\d+) (.+?) request\(s\) in"), "summary"),
    (re.compile(r"refusing (.+?) from "), "first"),
    (re.compile(r"closing (?:ASAP|ENRP|asap|enrp) connection from \S+: (.+)"), "closed"),
    (re.compile(r"(\d+) log line\(s\) left out"), "left out"),
    (re.compile(r"TLS-PSK: (no handshake|refused unknown identity)"), "tls"),
    (re.compile(r"ENRP (\w[\w ]*?) from \S+ at \S+ refused"), "enrp"),
    (re.compile(r"ENRP: (\d+) more messages refused"), "enrp more"),
    (re.compile(r"bad (?:ENRP )?message from"), "bad message"),
]


def log_figures(data):
    """
    What a piece of the registrar's log says: lines, bytes, the longest
    line, and the refusals it reports.
    """
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    counts = {}

    def add(key, n=1):
        counts[key] = counts.get(key, 0) + n

    tracebacks = 0
    for line in lines:
        if "Traceback (most recent call last)" in line:
            tracebacks += 1
        for pattern, what in REFUSALS:
            m = pattern.search(line)
            if not m:
                continue
            if what == "summary":
                add("refused " + m.group(2), int(m.group(1)))
            elif what == "first":
                add("refused " + m.group(1))
            elif what == "closed":
                reason = re.sub(r"[\d.]+", "N", m.group(1).strip())
                add("closed: " + reason)
            elif what == "left out":
                add("lines left out", int(m.group(1)))
            elif what == "tls":
                add("TLS-PSK " + m.group(1))
            elif what == "enrp":
                add("ENRP refused")
            elif what == "enrp more":
                add("ENRP refused", int(m.group(1)))
            else:
                add(what)
            break
    return {
        "bytes": len(data),
        "lines": len(lines),
        "longest": max((len(x) for x in lines), default=0),
        "tracebacks": tracebacks,
        "says": counts,
    }


# -- one flood --------------------------------------------------------------------

def run_flood(name, args, workdir):
    kind, addresses, connections, psk_needed, target, what = FLOODS[name]
    addresses = args.addresses or addresses
    connections = args.connections or connections
    asap_port, enrp_port = free_port(), free_port()
    log_path = os.path.join(workdir, "%s.log" % name)
    psk = write_keys(workdir) if psk_needed else None
    registrar_cpu, client_cpu = (0, 1) if args.pin else (None, None)
    registrar = legit = sampler = None
    attackers = []
    result = {"name": name, "kind": kind, "what": what, "addresses": addresses * args.processes,
              "connections_per_address": connections, "processes": args.processes,
              "tls": psk_needed}
    try:
        registrar = start_registrar(asap_port, enrp_port, log_path, psk, registrar_cpu)
        pid = registrar.pid
        legit = Legit(args, asap_port, psk, client_cpu)
        if not legit.wait_ready(args.pes):
            raise SystemExit("%s: the legitimate PEs did not all register" % name)
        sampler = Sampler(pid)
        quiet_start = time.time()
        time.sleep(args.quiet)
        quiet_end = time.time()
        rss_start = vmrss(pid)
        result["load"] = " ".join(open("/proc/loadavg").read().split()[:3])
        log_start = os.path.getsize(log_path)
        cpu_start = cpu_seconds(pid)
        flood_start = time.time()
        port = asap_port if target == "asap" else enrp_port
        for process in range(args.processes):
            argv = [PYTHON, os.path.join(HERE, "attack_flood.py"), "--kind", kind,
                    "--process", str(process), "--port", str(port),
                    "--addresses", str(addresses), "--connections", str(connections),
                    "--duration", str(args.duration), "--seed", str(args.seed)]
            attackers.append(subprocess.Popen(
                argv, env=env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                preexec_fn=preexec(client_cpu), start_new_session=True))
        reports = []
        peak_files = 0
        deadline = time.monotonic() + args.duration + 60
        while any(a.poll() is None for a in attackers) and time.monotonic() < deadline:
            peak_files = max(peak_files, open_files(pid) or 0)
            time.sleep(0.25)
        for attacker in attackers:
            try:
                out, _ = attacker.communicate(timeout=10)
                reports.append(json.loads(out.decode().strip().splitlines()[-1]))
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                reports.append(None)
        flood_end = time.time()
        cpu_end = cpu_seconds(pid)
        rss_flood_end = vmrss(pid)
        time.sleep(args.settle)
        settle_end = time.time()
        rss_end = vmrss(pid)
        files_end = open_files(pid)
        alive = registrar.poll() is None
        with open(log_path, "rb") as f:
            f.seek(log_start)
            log_data = f.read()
        sampler.stop()
        result.update({
            "duration": round(flood_end - flood_start, 2),
            "attackers": reports,
            "quiet": legit_figures(legit.window(quiet_start, quiet_end)),
            "flood": legit_figures(legit.window(flood_start, flood_end)),
            "after": legit_figures(legit.window(flood_end, settle_end)),
            "census_min": legit_figures(legit.window(flood_start, settle_end))["census_min"],
            "census_missing": legit_figures(
                legit.window(flood_start, settle_end))["missing_census"],
            "census_end": next((line["census"] for line in reversed(legit.lines)
                                if line["census"] is not None), None),
            "pe_losses": (legit.lines[-1]["pe_losses"] - legit.window(
                quiet_start, quiet_end)[-1]["pe_losses"]) if legit.lines else None,
            "rss_start": rss_start,
            "rss_max": sampler.peak(flood_start, settle_end),
            "rss_flood_end": rss_flood_end,
            "rss_end": rss_end,
            "cpu": round((cpu_end - cpu_start) / (flood_end - flood_start), 2)
            if cpu_end is not None and cpu_start is not None else None,
            "open_files_max": peak_files,
            "open_files_end": files_end,
            "rss_samples": [(round(t - flood_start, 2), r >> 20) for t, r in sampler.samples
                            if t >= flood_start - 1],
            "log": log_figures(log_data),
            "registrar_alive": alive,
            "connection_budget": connection_budget(),
        })
    finally:
        if sampler is not None:
            sampler.stop()
        for attacker in attackers:
            stop(attacker, grace=1.0)
        if legit is not None:
            stop(legit.proc, grace=2.0)
        if registrar is not None:
            stop(registrar)
    return result


# -- the report ----------------------------------------------------------------------

#: The bounds a flood is judged by (doc/security.rst, "Floods").
BOUNDS = {
    "ok_pct": 99.0,
    "p99_ratio": 2.0,
    "slow_rss_end_mb": 8,
    "log_bytes_per_s": 150 * 1024,
}

#: What the registrar's resident memory is bounded by (doc/security.rst,
#: "Floods"): a fresh registrar, and what the defaults let a source make it
#: hold.  Per PE registered and per open connection (its objects, a read
#: of requests waiting for their turn, the answers it has not read; over
#: TLS its OpenSSL state); PEs per source (--max-pes-per-source),
#: connections per source (--max-connections-per-source) and in all (the
#: open-file limit less 64).
MEMORY = {
    "base_mb": 64,
    # The allocator's: under a flood of short reads and answers it keeps
    # up to this much more than is live (measured: 130 MB under the
    # malformed flood), which it gives back afterwards (MemoryReturn).
    "slack_mb": 128,
    "pe_kb": 1.5,
    "connection_kb": 160,
    "tls_connection_kb": 240,
    "pes_per_source": 10000,
    "connections_per_source": 1024,
}


def connection_budget():
    """
    The registrar's connections in all: its open-file limit (raised to
    the hard one) less 64.
    """
    import resource

    return max(16, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64)


def rss_bound(result):
    """
    The resident memory (bytes) the defaults bound the registrar to under
    this flood: the base, the PEs its sources may register, the
    connections they may hold.
    """
    sources = result["addresses"]
    pes = sources * MEMORY["pes_per_source"] if result["kind"] in ("register", "pools") else 0
    per_source = min(result["connections_per_address"], MEMORY["connections_per_source"])
    connections = min(sources * per_source, result.get("connection_budget") or
                      connection_budget())
    kb = MEMORY["tls_connection_kb"] if result["tls"] else MEMORY["connection_kb"]
    return int(((MEMORY["base_mb"] + MEMORY["slack_mb"]) * 1024 + pes * MEMORY["pe_kb"]
                + connections * kb) * 1024)


def attack_totals(reports, seconds):
    reports = [r for r in reports if r]
    total = {}
    for r in reports:
        for key, value in r.items():
            if isinstance(value, (int, float)) and key not in ("process", "addresses", "elapsed"):
                total[key] = total.get(key, 0) + value
    elapsed = max([r["elapsed"] for r in reports] or [seconds]) or seconds
    total["messages_per_s"] = total.get("messages", 0) / elapsed
    total["connects_per_s"] = total.get("connects", 0) / elapsed
    total["answers_per_s"] = total.get("answers", 0) / elapsed
    failures = {}
    for r in reports:
        for reason, n in r.get("failures", {}).items():
            failures[reason] = failures.get(reason, 0) + n
    total["failures"] = failures
    return total


def verdict(result):
    """
    The bounds a flood broke (empty: it held).
    """
    broken = []
    q, f = result["quiet"], result["flood"]
    if f["ok_pct"] is None or f["ok_pct"] < BOUNDS["ok_pct"]:
        broken.append("success %s%%" % _num(f["ok_pct"], 1))
    if f["fresh_ok_pct"] is not None and f["fresh_ok_pct"] < BOUNDS["ok_pct"]:
        broken.append("new-connection success %s%%" % _num(f["fresh_ok_pct"], 1))
    if q["p99"] and f["p99"] and f["p99"] > BOUNDS["p99_ratio"] * q["p99"]:
        broken.append("p99 %.1fx quiet" % (f["p99"] / q["p99"]))
    if result["census_min"] is None or result["census_min"] < result.get("pes", 0):
        broken.append("legitimate PEs %s" % result["census_min"])
    if result["census_missing"] > 1:
        broken.append("no census for %d s" % result["census_missing"])
    if result["pe_losses"]:
        broken.append("%d PE connections lost" % result["pe_losses"])
    if result["rss_max"] and result["rss_max"] > rss_bound(result):
        broken.append("RSS %d MB > %d MB" % (result["rss_max"] >> 20, rss_bound(result) >> 20))
    if result["kind"] == "slow" and result["rss_end"] - result["rss_start"] > \
            BOUNDS["slow_rss_end_mb"] << 20:
        broken.append("RSS +%d MB after" % ((result["rss_end"] - result["rss_start"]) >> 20))
    seconds = result["duration"] + result.get("settle", 0)
    if result["log"]["bytes"] > BOUNDS["log_bytes_per_s"] * seconds:
        broken.append("log %d KB" % (result["log"]["bytes"] >> 10))
    if result["log"]["tracebacks"]:
        broken.append("%d tracebacks" % result["log"]["tracebacks"])
    if not result["registrar_alive"]:
        broken.append("registrar died")
    return broken


def _num(value, digits=2):
    if value is None:
        return "-"
    return "%.*f" % (digits, value)


def _count(value):
    if value >= 10000:
        return "%dk" % round(value / 1000.0)
    return "%d" % round(value)


def _mb(value):
    return "-" if value is None else "%d" % round(value / 1048576.0)


def table(results, args):
    row = "%-16s %5s %8s %7s %6s | %6s %6s %6s %5s %5s | %5s | %5s | %4s %4s %4s | %6s | %s"
    header = (row % (
        "flood", "addrs", "sent/s", "ans/s", "conn/s", "ok %", "p50", "p99", "q p50", "q p99",
        "new%", "PEs", "RSS0", "max", "end", "log KB", "verdict"))
    lines = [header, "-" * len(header)]
    for r in results:
        t = attack_totals(r["attackers"], r["duration"])
        q, f = r["quiet"], r["flood"]
        broken = verdict(r)
        lines.append(row % (
            r["name"], r["addresses"], _count(t["messages_per_s"]), _count(t["answers_per_s"]),
            _count(t["connects_per_s"]),
            _num(f["ok_pct"], 2), _num(f["p50"], 1), _num(f["p99"], 1), _num(q["p50"]),
            _num(q["p99"], 1),
            _num(f["fresh_ok_pct"], 1),
            "%s/%s" % (r["census_min"], r["pes"]) if r["census_min"] is not None else "-",
            _mb(r["rss_start"]), _mb(r["rss_max"]), _mb(r["rss_end"]),
            r["log"]["bytes"] // 1024, "ok" if not broken else "; ".join(broken)))
    return lines


def details(results):
    lines = []
    for r in results:
        t = attack_totals(r["attackers"], r["duration"])
        f = r["flood"]
        lines.append("")
        lines.append("%s: %s (%d processes, %d addresses, %d connections per address, %s)" % (
            r["name"], r["what"], r["processes"], r["addresses"], r["connections_per_address"],
            "TLS-PSK registrar" if r["tls"] else "plain TCP"))
        lines.append("  attackers: %d messages (%d/s), %d KB, %d connections opened (%d/s), "
                     "%d closed by the registrar, %d failed to connect %s, %d timed out "
                     "connecting, at most %d open" % (
                         t.get("messages", 0), t["messages_per_s"], t.get("bytes", 0) // 1024,
                         t.get("connects", 0), t["connects_per_s"],
                         t.get("closed_by_registrar", 0), t.get("connect_failed", 0),
                         json.dumps(t["failures"]) if t["failures"] else "",
                         t.get("connect_timeout", 0), t.get("max_open", 0)))
        lines.append("  answers to the attackers: %d (%d granted, %d refused or errors), "
                     "%d keep-alives acknowledged" % (
                         t.get("answers", 0), t.get("accepted", 0), t.get("refused_answers", 0),
                         t.get("keep_alive_acks", 0)))
        says = r["log"]["says"]
        lines.append("  registrar's log: %d bytes, %d lines (longest %d), %d tracebacks; "
                     "says: %s" % (
            r["log"]["bytes"], r["log"]["lines"], r["log"]["longest"], r["log"]["tracebacks"],
            ", ".join("%s %d" % (k, v) for k, v in sorted(says.items())) or "nothing"))
        lines.append("  load average at the start: %s; RSS bound for this flood %d MB" % (
            r.get("load", "-"), rss_bound(r) >> 20))
        lines.append("  registrar: CPU %s of a core during the flood, RSS %s -> max %s -> %s at "
                     "the flood's end -> %s MB after %g s; open files: at most %d, %s after" % (
                         _num(r["cpu"]), _mb(r["rss_start"]), _mb(r["rss_max"]),
                         _mb(r["rss_flood_end"]), _mb(r["rss_end"]), r["settle"],
                         r["open_files_max"], r["open_files_end"]))
        lines.append("  legitimate: %d resolutions, %s %% ok, p50 %s p99 %s max %s ms "
                     "(quiet p50 %s p99 %s); failures %s; new connections %d, %s %% ok, "
                     "p99 %s ms, "
                     "failures %s" % (
                         f["requests"], _num(f["ok_pct"], 2), _num(f["p50"]), _num(f["p99"]),
                         _num(f["max"]), _num(r["quiet"]["p50"]), _num(r["quiet"]["p99"]),
                         json.dumps(f["failed"]), f["fresh_requests"], _num(f["fresh_ok_pct"], 1),
                         _num(f["fresh_p99"]), json.dumps(f["fresh_failed"])))
        lines.append("  legitimate PEs: lowest census %s of %d (%d seconds without one), %s at "
                     "the end; %s PE connections lost" % (
                         r["census_min"], r["pes"], f["missing_census"], r["census_end"],
                         r["pe_losses"]))
        a = r["after"]
        lines.append("  after the flood: %s %% ok, p99 %s ms" % (_num(a["ok_pct"], 2),
                                                                   _num(a["p99"])))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--flood", action="append", default=[],
                        help="a flood to run (repeatable, or comma-separated): %s"
                        % ", ".join(FLOODS))
    parser.add_argument("--all", action="store_true", help="run every flood: %s" % ", ".join(ALL))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of flood")
    parser.add_argument("--quiet", type=float, default=6.0, help="quiet seconds before it")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds after it")
    parser.add_argument("--processes", type=int, default=2, help="attacker processes")
    parser.add_argument("--addresses", type=int, default=0,
                        help="source addresses per attacker process [the flood's own]")
    parser.add_argument("--connections", type=int, default=0,
                        help="connections per source address [the flood's own]")
    parser.add_argument("--pes", type=int, default=20, help="legitimate PEs")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="legitimate resolutions per second")
    parser.add_argument("--fresh-rate", type=float, default=10.0,
                        help="legitimate resolutions per second over new connections")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds after which a legitimate resolution has failed")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the registrar to CPU 0 and the rest to CPU 1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", default=None,
                        help="run the registrar from this source tree (e.g. a git archive of "
                        "an older commit) instead of this one")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "attack.txt"))
    parser.add_argument("--json", default=None, help="also write every figure here")
    parser.add_argument("--registrar-option", action="append", default=[], metavar="OPTION",
                        help="an option for twistd enrp, e.g. --registrar-option="
                        "--max-pool-elements=100000 (experiments: the defaults are the point)")
    parser.add_argument("--report", default=None, metavar="JSON",
                        help="only write the report of a run saved with --json")
    parser.add_argument("--rst", action="store_true",
                        help="with --report: print the table as reStructuredText")
    parser.add_argument("--keep-logs", default=None,
                        help="copy the registrar's logs into this directory")
    args = parser.parse_args()
    if args.report:
        with open(args.report) as f:
            run = json.load(f)
        if isinstance(run, dict) and "results" in run:
            if args.rst:
                sys.stdout.write(rst_table(run["results"]))
            else:
                write_report(run, args.out)
            return
        parser.error("%s is no run saved with --json" % args.report)
    global SOURCE
    EXTRA_OPTIONS[:] = args.registrar_option
    if args.source:
        SOURCE = os.path.abspath(args.source)
    names = list(ALL) if args.all else []
    for item in args.flood:
        names += [n.strip() for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in FLOODS]
    if unknown or not names:
        parser.error("say --all or --flood with one of: %s" % ", ".join(FLOODS))
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        args.pin = False
    if not 1 <= args.processes <= 16 or not 1 <= args.duration <= 600:
        parser.error("--processes 1 to 16, --duration 1 to 600 seconds")
    results = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="attack-") as workdir:
        for name in names:
            print("%s ..." % name, file=sys.stderr, flush=True)
            result = run_flood(name, args, workdir)
            result["pes"] = args.pes
            result["settle"] = args.settle
            results.append(result)
            for line in table([result], args)[2:] + details([result]):
                print(line, file=sys.stderr, flush=True)
            if args.keep_logs:
                os.makedirs(args.keep_logs, exist_ok=True)
                with open(os.path.join(workdir, "%s.log" % name), "rb") as src, \
                        open(os.path.join(args.keep_logs, "%s.log" % name), "wb") as dst:
                    dst.write(src.read())
    command = "python3 bench/attack.py " + " ".join(sys.argv[1:])
    try:
        revision = subprocess.run(
            ["git", "-C", SOURCE, "describe", "--always", "--dirty"], capture_output=True,
            text=True, timeout=10).stdout.strip() or "not a git tree"
    except (OSError, subprocess.TimeoutExpired):
        revision = "unknown"
    run = {
        "command": command, "source": SOURCE, "revision": revision,
        "python": platform.python_version(), "platform": platform.platform(terse=True),
        "cpus": os.cpu_count(), "pin": args.pin, "duration": args.duration,
        "quiet": args.quiet, "settle": args.settle, "seconds": round(time.time() - started),
        "pes": args.pes, "rate": args.rate, "fresh_rate": args.fresh_rate,
        "timeout": args.timeout, "registrar_options": EXTRA_OPTIONS, "results": results,
    }
    write_report(run, args.out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1)


def rst_table(results):
    """
    The results as a reStructuredText table (for doc/perf/attack-table.rst).
    """
    rows = [("flood", "sources", "attack /s", "legit ok %", "p50 / p99 ms", "quiet p99",
             "new conn ok %", "PEs", "RSS MB", "log KB", "bounds")]
    for r in results:
        t = attack_totals(r["attackers"], r["duration"])
        q, f = r["quiet"], r["flood"]
        broken = verdict(r)
        if r["kind"] in ("idle", "half", "tls"):
            rate = "%s conn" % _count(t["connects_per_s"])
        else:
            rate = "%s msg" % _count(t["messages_per_s"])
        rows.append((
            r["name"], "%d" % r["addresses"], rate, _num(f["ok_pct"], 1),
            "%s / %s" % (_num(f["p50"], 1), _num(f["p99"], 1)), _num(q["p99"], 1),
            _num(f["fresh_ok_pct"], 1),
            "%s/%s" % (r["census_min"], r["pes"]) if r["census_min"] is not None else "-",
            "%s / %s / %s" % (_mb(r["rss_start"]), _mb(r["rss_max"]), _mb(r["rss_end"])),
            "%d" % (r["log"]["bytes"] // 1024), "held" if not broken else "; ".join(broken)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths)).rstrip(), rule]
    for row in rows[1:]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    lines.append(rule)
    return "\n".join(lines) + "\n"


def write_report(run, out):
    """
    Print the report of a run and write it to C{out}.
    """
    results = run["results"]
    head = [
        "Floods against a registrar with its default limits (issue #14)",
        "command: %s" % run["command"] + (
            "  (registrar options: %s; not its defaults)" % " ".join(run["registrar_options"])
            if run.get("registrar_options") else ""),
        "registrar source: %s (%s)" % (run.get("source", "?"), run.get("revision", "?")),
        "python %s, %s, %s CPUs; registrar %s; %g s of flood, %g s quiet before, %g s after; "
        "total %s s" % (
            run.get("python", "?"), run.get("platform", "?"), run.get("cpus", "?"),
            "pinned to CPU 0, attackers and legitimate side on CPU 1 (legitimate at nice -10)"
            if run.get("pin", True) else "not pinned", run.get("duration", 20),
            run.get("quiet", 8), run.get("settle", 10), run.get("seconds", "?")),
        "legitimate: %d PEs and a pool user from 127.0.0.1, %g resolutions/s on one connection "
        "and %g/s on new connections; success = an answer with PEs within %g s" % (
            run.get("pes", 20), run.get("rate", 200), run.get("fresh_rate", 10),
            run.get("timeout", 1)),
        "bounds: success >= %g %%, p99 <= %gx quiet, all PEs kept, RSS <= %d MB + %g KB a PE "
        "and %d KB a connection (%d over TLS) the flood's sources may hold, slow reader leaves "
        "RSS within %d MB, log <= %d KB/s of flood and settle time" % (
            BOUNDS["ok_pct"], BOUNDS["p99_ratio"], MEMORY["base_mb"] + MEMORY["slack_mb"],
            MEMORY["pe_kb"],
            MEMORY["connection_kb"], MEMORY["tls_connection_kb"],
            BOUNDS["slow_rss_end_mb"], BOUNDS["log_bytes_per_s"] // 1024),
        "columns: addresses the flood came from; per second, messages the attackers got into "
        "their sockets (sent/s), answers they got (ans/s) and connections they opened; "
        "legitimate resolutions: success %, p50 and p99 ms under the flood, and quiet; "
        "success % over new connections; lowest census of legitimate PEs; registrar RSS MB "
        "before, highest, after the settle time; log growth in KB",
        "",
    ]
    text = "\n".join(head + table(results, None) + details(results)) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
