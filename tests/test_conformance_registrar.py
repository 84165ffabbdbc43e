"""
Our registrar against the conformance suite (issue #17): C{twistd enrp}
on loopback over TCP (ASAP and ENRP, the suite admitted as an ENRP peer
with C{--enrp-peer-networks 127.0.0.0/8}), short timers, Server Announce
on a multicast group kept on the loopback interface, and C{rserpool
conformance} run against it as another process, as any implementer would
run it.

Every MUST requirement must pass, and every outcome must be the one
``tests/data/conformance/ours-tcp.txt`` records, so that a change in our
registrar, or in the suite, shows up.  To record new outcomes after a
deliberate change::

    rserpool conformance ... --outcomes tests/data/conformance/ours-tcp.txt

or run the test with ``RSERPOOL_CONFORMANCE_RECORD=1`` in its environment.
"""
import os
import xml.etree.ElementTree as ElementTree

from twisted.internet import defer
from twisted.trial import unittest

from rserpool.conformance.report import parse_outcomes
from rserpool.conformance.requirements import MANDATORY
from tests.helpers import ROOT, TWISTD, listening_port, shared_udp_port, spawn

DATA = os.path.join(ROOT, "tests", "data", "conformance")
KEEP_ALIVE = "2"
KEEP_ALIVE_TIMEOUT = "1"
#: PEER-HEARTBEAT-CYCLE (seconds; RSPLIB's smallest is 1 s)
HEARTBEAT = "1"
#: MAX-TIME-LAST-HEARD, MAX-TIME-NO-RESPONSE and the takeover expiry
LAST_HEARD = "2"
NO_RESPONSE = "1"
TAKEOVER_EXPIRY = "1"
#: The ENRP timers as the suite's options
ENRP_TIMERS = ["--set", "PEER_HEARTBEAT=" + HEARTBEAT,
               "--set", "PEER_MAX_TIME_LAST_HEARD=" + LAST_HEARD,
               "--set", "PEER_MAX_TIME_NO_RESPONSE=" + NO_RESPONSE,
               "--set", "TAKEOVER_EXPIRY=" + TAKEOVER_EXPIRY]
ANNOUNCE_INTERVAL = "0.5"


def mandatory_failures(junit):
    """
    The MUST tests of a JUnit file of the suite that did not pass (nor
    were skipped as not applicable), as C{(name, outcome)}.
    """
    root = ElementTree.fromstring(junit)
    out = []
    for case in root.findall("testcase"):
        props = {p.get("name"): p.get("value") for p in case.find("properties")}
        if props["level"] in MANDATORY and props["outcome"] not in ("pass", "skipped"):
            out.append((case.get("classname") + "." + case.get("name"), props["outcome"]))
    return out


def start_registrar(test, *extra, asap="tcp:0:interface=127.0.0.1",
                    enrp="tcp:0:interface=127.0.0.1", address="127.0.0.1",
                    launcher=("-c", TWISTD)):
    """
    Our registrar on loopback (ASAP and ENRP over TCP on port 0, unless
    told otherwise), with the suite's short keep-alive timers.

    @param launcher: the Python arguments that run C{twistd}.
    @return: a L{Deferred} firing with C{(process, asap port, enrp port)}.
    """
    registrar = spawn(
        test, *launcher, "-n", "--pidfile=", "enrp", "--asap", asap, "--enrp", enrp,
        "--keep-alive-interval", KEEP_ALIVE, "--keep-alive-timeout", KEEP_ALIVE_TIMEOUT,
        "--peer-heartbeat-cycle", HEARTBEAT, "--peer-max-time-last-heard", LAST_HEARD,
        "--peer-max-time-no-response", NO_RESPONSE, "--takeover-expiry", TAKEOVER_EXPIRY,
        *extra, module=None, name="our registrar")
    asap = listening_port(registrar, "ASAP", address)
    enrp = listening_port(registrar, "ENRP", address)
    ready = registrar.wait_for(b"ready", timeout=20)
    d = defer.gatherResults([asap, enrp, ready], consumeErrors=True)
    d.addCallback(lambda r: (registrar, r[0], r[1]))
    return d


@defer.inlineCallbacks
def run_suite(test, *args):
    """
    C{rserpool conformance ARGS} in another process, with its JUnit file,
    report and outcomes written to a directory of the test.

    @return: a L{Deferred} firing with C{(exit code, junit bytes, outcomes
        text, report text, the process)}.
    """
    where = os.path.abspath(test.mktemp())
    os.makedirs(where)
    files = {k: os.path.join(where, k) for k in ("junit.xml", "report.md", "outcomes.txt")}
    suite = spawn(test, "conformance", *args, "--junit", files["junit.xml"],
                  "--report", files["report.md"], "--outcomes", files["outcomes.txt"],
                  name="rserpool conformance")
    code = yield suite.wait_exit(110)
    texts = {}
    for key, path in files.items():
        with open(path, "rb") as f:
            texts[key] = f.read()
    return (code, texts["junit.xml"], texts["outcomes.txt"].decode(),
            texts["report.md"].decode(), suite)


class OurRegistrarTCPTests(unittest.TestCase):
    """
    The suite against our registrar over TCP.
    """

    timeout = 150

    @defer.inlineCallbacks
    def test_suite(self):
        """
        Every MUST requirement passes; the outcomes are the recorded ones.
        """
        group = "239.0.0.50:%d" % shared_udp_port(self)
        registrar, asap, enrp = yield start_registrar(
            self, "--enrp-peer-networks", "127.0.0.0/8",
            "--announce", "--announce-group", group, "--announce-interface", "127.0.0.1",
            "--announce-ttl", "1", "--announce-interval", ANNOUNCE_INTERVAL)
        args = ["--asap", "tcp:host=127.0.0.1:port=%d" % asap,
                "--enrp", "tcp:host=127.0.0.1:port=%d" % enrp,
                "--keep-alive", KEEP_ALIVE, "--keep-alive-timeout", KEEP_ALIVE_TIMEOUT,
                "--set", "ANNOUNCE=%s:127.0.0.1" % group,
                "--set", "ANNOUNCE_INTERVAL=%s" % ANNOUNCE_INTERVAL] + ENRP_TIMERS
        result = yield run_suite(self, *args)
        assert_suite_passed(self, result, "ours-tcp.txt")


def assert_suite_passed(test, result, name):
    """
    Fail C{test} unless the suite's run (C{result}, what L{run_suite} gives)
    met every MUST requirement, had the outcomes recorded in
    C{tests/data/conformance/NAME} and exited 0.
    """
    code, junit, outcomes, report, suite = result
    failed = mandatory_failures(junit)
    test.assertEqual(failed, [], "MUST requirements not met:\n%s\n%s" % (
        report, suite.describe()))
    changed = changed_outcomes(outcomes, name)
    test.assertEqual(changed, [], "outcomes differ from tests/data/conformance/"
                     "%s (after a deliberate change, record them: "
                     "RSERPOOL_CONFORMANCE_RECORD=1 trial %s):\n%s" % (name, test.id(), report))
    test.assertEqual(code, 0, suite.describe())


def known_outcomes(name):
    """
    The recorded outcomes C{tests/data/conformance/NAME}.
    """
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return parse_outcomes(f.read())


def changed_outcomes(outcomes, name):
    """
    How C{outcomes} differ from C{tests/data/conformance/NAME}, as lines.
    With C{RSERPOOL_CONFORMANCE_RECORD=1} in the environment the file is
    written instead (its leading comment kept), and nothing differs.
    """
    path = os.path.join(DATA, name)
    if os.environ.get("RSERPOOL_CONFORMANCE_RECORD"):
        header = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                header = [line for line in f if line.startswith("#")]
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(header) + outcomes)
        return []
    return differences(outcomes, known_outcomes(name))


def differences(outcomes, known):
    """
    Differences between an outcomes file and known outcomes.
    """
    now = parse_outcomes(outcomes)
    lines = []
    for test in sorted(set(now) | set(known)):
        if now.get(test) != known.get(test):
            lines.append("%s: recorded %s, now %s" % (test, known.get(test), now.get(test)))
    return lines

