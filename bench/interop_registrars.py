"""
Starting and stopping the two registrars of bench_interop.py (and of the
RSPLIB interoperability tests) with the same settings: ours
(``twistd -n enrp``) and RSPLIB's ``rspregistrar``, each serving ASAP over
SCTP on one address and port, keep-alives pushed out of the run, no
multicast announcements, no per-request logging.

Also the guest's network set-up: a dummy interface with site-local
addresses (RSPLIB's PEs and registrar want addresses wider than loopback).
Everything here runs inside the SCTP guest (``shared/tools/sctp-vm``), as
root.
"""
import os
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

IPPROTO_SCTP = 132


def python_env():
    """
    The environment for a child Python that must import this tree's
    C{rserpool} (and find its twisted plugins).
    """
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def add_dummy(name, addresses, prefix=24):
    """
    Create dummy interface C{name} carrying C{addresses} (and multicast
    routes), as RSPLIB's own test scripts do.  Needs root.

    @return: a callable that removes it again.
    """
    ip = shutil.which("ip") or "/sbin/ip"
    subprocess.run([ip, "link", "del", name], stderr=subprocess.DEVNULL, check=False)
    subprocess.run([ip, "link", "add", name, "type", "dummy"], check=True)
    for a in addresses:
        subprocess.run([ip, "addr", "add", "%s/%d" % (a, prefix), "dev", name], check=True)
    subprocess.run([ip, "link", "set", name, "up", "multicast", "on"], check=True)

    def remove():
        subprocess.run([ip, "link", "del", name], stderr=subprocess.DEVNULL, check=False)

    return remove


def sctp_reachable(host, port):
    """
    Whether an SCTP association to C{host}:C{port} can be set up now.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    s.settimeout(1.0)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_sctp(proc, host, port, timeout=20.0, what="registrar"):
    """
    Poll until C{host}:C{port} accepts SCTP associations, or fail if
    C{proc} exits or C{timeout} passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sctp_reachable(host, port):
            return
        if proc.poll() is not None:
            raise RuntimeError("%s exited with status %s before listening" % (what, proc.returncode))
        time.sleep(0.05)
    raise RuntimeError("%s did not listen on %s:%d within %g s" % (what, host, port, timeout))


def ours_argv(address, asap_port, enrp_port=None, quiet=True, log=os.devnull, extra=()):
    """
    The command line of our registrar serving ASAP (one-to-many socket, as
    RSPLIB's) and optionally ENRP over SCTP on C{address}.
    """
    launcher = ["-c", "from twisted.scripts.twistd import run; run()"]
    if os.environ.get("RSERPOOL_BENCH_PROFILE"):
        # a script that runs twistd under cProfile (for finding hot spots)
        launcher = [os.environ["RSERPOOL_BENCH_PROFILE"]]
    argv = [sys.executable] + launcher + [
        "-n", "--pidfile=", "-l", log, "enrp",
        "--asap", "sctp:%d:interface=%s:mode=seqpacket:backlog=1024" % (asap_port, address),
    ]
    if enrp_port is not None:
        argv += ["--enrp", "sctp:%d:interface=%s:ppid=12" % (enrp_port, address)]
    if quiet:
        argv += ["--quiet", "--keep-alive-interval", "300"]
    # Capacity is measured, not the limits per source (all load comes from
    # one address here): switch them off.
    argv += ["--max-pes-per-source", "0", "--max-pools-per-source", "0", "--max-pool-elements", "0",
             "--max-hr-rate-per-source", "0", "--max-connections-per-source", "0"]
    return argv + list(extra)


def rsplib_argv(address, asap_port, enrp_port, quiet=True, extra=()):
    """
    The command line of RSPLIB's registrar with the same settings.
    """
    argv = [
        "rspregistrar",
        "-asap=%s:%d" % (address, asap_port),
        "-enrp=%s:%d" % (address, enrp_port),
        "-asapannounce=off",
        "-enrpannounce=off",
    ]
    if quiet:
        argv += [
            "-quiet", "-logquiet",
            "-endpointkeepalivetransmissioninterval=300000",
        ]
    return argv + list(extra)


def start(argv, address, port, log=None, env=None, what="registrar"):
    """
    Start a registrar and wait until its ASAP port answers.

    @return: the L{subprocess.Popen}.
    """
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    finally:
        if log:
            out.close()
    try:
        wait_sctp(proc, address, port, what=what)
    except Exception:
        stop(proc)
        raise
    return proc


def stop(proc, timeout=5.0):
    """
    Terminate C{proc}, kill it if it lingers, and reap it.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def cpu_seconds(pid):
    """
    User plus system CPU seconds a process (all its threads) has used.
    """
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rsplib_version():
    """
    The installed rsplib-registrar package's version, or C{None}.
    """
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "rsplib-registrar"],
            capture_output=True, text=True, check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None
