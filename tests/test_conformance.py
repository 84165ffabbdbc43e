"""
The conformance suite's own parts, without a target (rserpool.conformance):
the environment it reads, the requirement registry, SHOULD/MAY tests that
report "not met" instead of failing, the statistics, the reports.
"""
import io
import math
import os
import xml.etree.ElementTree as ElementTree

from attrs import evolve as attrs_evolve
from twisted.trial import unittest

from rserpool.conformance import case, report, requirements, runner, stats, target
from rserpool.conformance.client import WireConnection
from rserpool.conformance.requirements import Requirement
from rserpool.wire import EndpointKeepAlive, EndpointKeepAliveAck, ProtocolError


class TargetTests(unittest.SynchronousTestCase):
    def test_defaults(self):
        """
        Without settings nothing is targeted and the timers are RFC 5352's
        and RSPLIB's defaults.
        """
        t = target.Target.from_environ({})
        self.assertIsNone(t.asap)
        self.assertEqual((t.keep_alive_interval, t.keep_alive_timeout, t.max_bad_pe_report),
                         (5.0, 5.0, 3))

    def test_settings(self):
        """
        Every setting comes from its variable; environ() gives them back.
        """
        env = {
            "RSERPOOL_TARGET_ASAP": "sctp:host=10.0.0.1:port=3863",
            "RSERPOOL_TARGET_KEEPALIVE": "1.5",
            "RSERPOOL_TARGET_MAX_BAD_PE_REPORT": "4",
            "RSERPOOL_TARGET_SOURCES": "10.0.0.2, 10.0.0.3",
            "RSERPOOL_TARGET_ANNOUNCE": "239.0.0.50:3863:10.0.0.1",
            "RSERPOOL_TARGET_PEER_ID": "0x1234",
        }
        t = target.Target.from_environ(env)
        self.assertEqual(t.asap, "sctp:host=10.0.0.1:port=3863")
        self.assertEqual(t.keep_alive_interval, 1.5)
        self.assertEqual(t.max_bad_pe_report, 4)
        self.assertEqual(t.sources, ("10.0.0.2", "10.0.0.3"))
        self.assertEqual(t.announce, ("239.0.0.50", 3863, "10.0.0.1"))
        self.assertEqual(t.peer_id, 0x1234)
        self.assertEqual(target.Target.from_environ(t.environ()), t)

    def test_psk(self):
        """
        With a key file the suite's tcp: client endpoints become psk: ones,
        with the ASAP identity or the peer's, and its peer listens with the
        registrars' key file; without one nothing changes.
        """
        plain = target.Target.from_environ({})
        self.assertEqual(plain.client("tcp:host=127.0.0.1:port=1"), "tcp:host=127.0.0.1:port=1")
        self.assertEqual(plain.server("tcp:0:interface=127.0.0.1"), "tcp:0:interface=127.0.0.1")
        t = target.Target.from_environ({
            "RSERPOOL_TARGET_PSK_KEYS": "/k/pool", "RSERPOOL_TARGET_PSK_IDENTITY": "pe-1",
            "RSERPOOL_TARGET_PSK_PEER_KEYS": "/k/peers",
            "RSERPOOL_TARGET_PSK_PEER_IDENTITY": "suite"})
        self.assertEqual(t.client("tcp:host=127.0.0.1:port=1"),
                         "psk:host=127.0.0.1:port=1:keys=/k/pool:identity=pe-1")
        self.assertEqual(t.client("tcp:host=127.0.0.1:port=2", peer=True),
                         "psk:host=127.0.0.1:port=2:keys=/k/peers:identity=suite")
        self.assertEqual(t.server("tcp:0:interface=127.0.0.1"),
                         "psk:0:interface=127.0.0.1:keys=/k/peers")
        self.assertRaises(target.TargetError, t.client, "sctp:host=127.0.0.1:port=1")
        self.assertEqual(target.Target.from_environ(t.environ()), t)
        # One identity is one node: no other sources on loopback.
        self.assertIsNone(attrs_evolve(t, asap="tcp:host=127.0.0.1:port=1").source_addresses(2))

    def test_pskKeys(self):
        """
        A key file that cannot be read, or lacks the identity, is one line
        naming the setting.
        """
        e = self.assertRaises(target.TargetError, target.Target.from_environ(
            {"RSERPOOL_TARGET_PSK_KEYS": "/nonexistent/keys"}).check_keys)
        self.assertIn("RSERPOOL_TARGET_PSK_KEYS", str(e))
        e = self.assertRaises(target.TargetError, target.Target.from_environ,
                              {"RSERPOOL_TARGET_PSK_IDENTITY": "two words"})
        self.assertIn("RSERPOOL_TARGET_PSK_IDENTITY", str(e))
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("pe-1 %s\npe-2 %s\n" % ("11" * 32, "22" * 32))
        os.chmod(path, 0o600)
        e = self.assertRaises(target.TargetError, target.Target.from_environ(
            {"RSERPOOL_TARGET_PSK_KEYS": path}).check_keys)
        self.assertIn("identities", str(e))
        target.Target.from_environ({"RSERPOOL_TARGET_PSK_KEYS": path,
                                    "RSERPOOL_TARGET_PSK_IDENTITY": "pe-2"}).check_keys()

    def test_bad(self):
        """
        A malformed setting is a L{TargetError} naming the variable.
        """
        for name, value in (("RSERPOOL_TARGET_ASAP", "http://x"),
                            ("RSERPOOL_TARGET_KEEPALIVE", "soon"),
                            ("RSERPOOL_TARGET_SOURCES", "10.0.0.300"),
                            ("RSERPOOL_TARGET_ANNOUNCE", "239.0.0.50")):
            e = self.assertRaises(target.TargetError, target.Target.from_environ, {name: value})
            self.assertIn(name, str(e))

    def test_sources(self):
        """
        Distinct sources: the configured ones, else 127.0.0.2... for a
        loopback target, else none.
        """
        loopback = target.Target(asap="tcp:host=127.0.0.1:port=3863")
        self.assertEqual(loopback.source_addresses(3), ("127.0.0.2", "127.0.0.3", "127.0.0.4"))
        remote = target.Target(asap="sctp:host=10.255.1.1:port=3863")
        self.assertIsNone(remote.source_addresses(1))
        given = target.Target(asap="tcp:10.0.0.1:3863", sources=("10.0.0.2",))
        self.assertEqual(given.source_addresses(1), ("10.0.0.2",))
        self.assertIsNone(given.source_addresses(2))

    def test_endpointHost(self):
        self.assertEqual(str(target.endpoint_host("tcp:host=127.0.0.1:port=1")), "127.0.0.1")
        self.assertEqual(str(target.endpoint_host("tcp:10.1.2.3:3863")), "10.1.2.3")
        self.assertEqual(str(target.endpoint_host("sctp:host=10.0.0.1,10.0.0.2:port=1")),
                         "10.0.0.1")
        self.assertIsNone(target.endpoint_host("tcp:host=example.org:port=1"))


class RequirementTests(unittest.SynchronousTestCase):
    def test_parse(self):
        """
        The first paragraph of a docstring names the requirement; the rest
        is free.
        """
        r = requirements.parse("""
            RFC 5352 §3.1 MUST NOT: a registrar
            registers nothing twice.

            How: ...
            """)
        self.assertEqual(r, Requirement("RFC 5352", "3.1", "MUST NOT",
                                        "a registrar registers nothing twice."))
        self.assertEqual(r.citation, "RFC 5352 §3.1")
        self.assertTrue(r.mandatory)
        self.assertFalse(requirements.parse("RFC 5354 §3 MAY: x").mandatory)

    def test_unparsable(self):
        for doc in (None, "", "Registration works.", "RFC 5352 3.1 MUST: x",
                    "RFC 5352 §3.1 MIGHT: x"):
            self.assertRaises(requirements.RequirementError, requirements.parse, doc)

    def test_everyTestNamesOne(self):
        """
        Every test of the suite names a requirement (L{collect} raises
        otherwise), and the list prints.
        """
        pairs = requirements.collect(runner.load(list(runner.available().values())))
        self.assertTrue(len(pairs) > 40)
        levels = {r.level for _, r in pairs}
        self.assertTrue({"MUST", "SHOULD", "MAY"} <= levels, levels)
        text = requirements.format_list(pairs)
        self.assertIn("RFC 5352 §3.1    MUST", text)
        table = requirements.format_list(pairs, markdown=True)
        self.assertTrue(table.startswith("| Requirement | Level |"))

    def test_classWithoutRequirement(self):
        """
        A test without a requirement cannot even be defined.
        """
        def define():
            class Bad(case.ConformanceCase):
                def test_x(self):
                    "Works."
        self.assertRaises(requirements.RequirementError, define)


def optional_case():
    """
    A conformance case (not collected by trial here) whose tests of each
    level fail, to see what becomes of them.
    """

    class Optional(case.ConformanceCase):
        """
        Tests of each level that fail, to see what becomes of them.
        """

        def test_should(self):
            """
            RFC 5352 §3.1 SHOULD: something optional.
            """
            self.fail("not there")

        def test_must(self):
            """
            RFC 5352 §3.1 MUST: something required.
            """
            self.fail("not there")

        def test_wire(self):
            """
            RFC 5352 §3.1 MAY: something optional, but the target sent garbage.
            """

        def test_prerequisite(self):
            """
            RFC 5352 §3.1 MAY: something optional whose set-up failed.
            """
            raise case.Prerequisite("could not register")

    return Optional


class OutcomeTests(unittest.SynchronousTestCase):
    def run_one(self, name, bad=()):
        test = optional_case()(name)
        test.connections = []
        if bad:
            conn = WireConnection(None)
            conn.bad.extend(bad)
            test.connections.append(conn)
        d = getattr(test, name)()
        return self.failureResultOf(d)

    def test_shouldNotMet(self):
        """
        A SHOULD test that fails is reported as skipped, "not met (SHOULD)".
        """
        f = self.run_one("test_should")
        f.trap(unittest.SkipTest)
        self.assertEqual(str(f.value), "not met (SHOULD): not there")
        self.assertEqual(report.classify_skip(f.value), "not-met")

    def test_mustFails(self):
        f = self.run_one("test_must")
        f.trap(AssertionError)

    def test_wireViolationFails(self):
        """
        Whatever the level, an undecodable message from the target fails.
        """
        f = self.run_one("test_wire", bad=[ProtocolError(3, "junk")])
        f.trap(case.WireViolation)

    def test_prerequisiteErrs(self):
        f = self.run_one("test_prerequisite")
        f.trap(case.Prerequisite)


class ClientTests(unittest.SynchronousTestCase):
    def test_acksKeepAlive(self):
        """
        The wire client answers Endpoint Keep Alives for the PEs it acks,
        with or without an identifier in them, and no others.
        """
        sent = []
        conn = WireConnection(None)
        conn.send = sent.append
        conn.reactor = type("R", (), {"seconds": staticmethod(lambda: 0.0)})()
        conn.ack(b"P", 7)
        conn.ack(b"P", 8)
        conn.ack(b"P", 8, on=False)
        conn.message_received(None, EndpointKeepAlive(1, b"P", 7))
        conn.message_received(None, EndpointKeepAlive(1, b"P", 8))
        conn.message_received(None, EndpointKeepAlive(1, b"P"))
        self.assertEqual(sent, [EndpointKeepAliveAck(b"P", 7)] * 2)
        self.assertEqual(len(conn.keep_alives), 3)


class StatsTests(unittest.SynchronousTestCase):
    def test_criticalValues(self):
        """
        The table's values are the chi-square quantiles at p = 0.0001: for
        one degree of freedom P = erfc(sqrt(x/2)), for two exp(-x/2).
        """
        self.assertAlmostEqual(math.erfc(math.sqrt(stats.CRITICAL[1] / 2)), 1e-4, delta=1e-6)
        self.assertAlmostEqual(math.exp(-stats.CRITICAL[2] / 2), 1e-4, delta=1e-6)

    def test_fits(self):
        self.assertTrue(stats.fits([100, 98, 102], [1, 1, 1])[0])
        self.assertFalse(stats.fits([300, 0, 0], [1, 1, 1])[0])
        self.assertTrue(stats.fits([100, 300], [1, 3])[0])
        self.assertFalse(stats.fits([200, 200], [1, 3])[0])


class ReportTests(unittest.SynchronousTestCase):
    def results(self):
        must = Requirement("RFC 5352", "3.1", "MUST", "registers")
        should = Requirement("RFC 5352", "2.2.14", "SHOULD", "answers | errors")
        return [
            report.Result("rserpool.conformance.test_asap.A.test_a", must, "pass"),
            report.Result("rserpool.conformance.test_asap.A.test_b", must, "fail", "no\nanswer"),
            report.Result("rserpool.conformance.test_asap.A.test_c", should, "not-met", "x"),
        ]

    def test_markdown(self):
        text = report.markdown(self.results(), "Ours", [("RSERPOOL_TARGET_ASAP", "tcp:x")])
        self.assertIn("1 pass, 1 fail, 0 error, 1 not-met, 0 skipped", text)
        self.assertIn("| RFC 5352 §3.1 | MUST | registers | `test_asap.A.test_b` | FAIL | no answer |",
                      text)
        self.assertIn("answers \\| errors", text)
        self.assertIn("not met (SHOULD)", text)
        # sorted by section: 2.2.14 before 3.1
        self.assertLess(text.index("§2.2.14"), text.index("§3.1 |"))

    def test_junit(self):
        root = ElementTree.fromstring(report.junit_xml(self.results()))
        self.assertEqual((root.get("tests"), root.get("failures"), root.get("skipped")),
                         ("3", "1", "1"))
        cases = root.findall("testcase")
        self.assertEqual(cases[1].find("failure").get("message"), "no answer")
        props = {p.get("name"): p.get("value") for p in cases[0].find("properties")}
        self.assertEqual(props["requirement"], "RFC 5352 §3.1")

    def test_knownOutcomes(self):
        results = self.results()
        text = report.outcomes_text(results)
        self.assertEqual(text.splitlines()[0], "test_asap.A.test_a pass")
        known = report.parse_outcomes("# ours\n" + text)
        self.assertEqual(report.compare(results, known), [])
        known["test_asap.A.test_b"] = "pass"
        del known["test_asap.A.test_c"]
        known["test_asap.A.test_gone"] = "pass"
        self.assertEqual(report.compare(results, known), [
            "test_asap.A.test_b: was pass, now fail (no answer)",
            "test_asap.A.test_c: new, not-met (x)",
            "test_asap.A.test_gone: was pass, not run now",
        ])
        self.assertRaises(ValueError, report.parse_outcomes, "test_x maybe")


class CommandTests(unittest.SynchronousTestCase):
    def test_list(self):
        """
        C{rserpool conformance --list} prints the requirements.
        """
        from rserpool.cli import main

        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["conformance", "--list"], out, err), 0)
        self.assertIn("RFC 5352 §3.3", out.getvalue())

    def test_nothing(self):
        from rserpool.cli import main

        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["conformance", "--set", "KEEPALIVE=1"], out, err), 2)
        self.assertIn("nothing to test", err.getvalue())
        self.assertEqual(main(["conformance", "--asap", "tcp:1:2", "--set", "BOGUS=1"], out, err),
                         2)
        self.assertIn("not a setting", err.getvalue())


class ChecksumTests(unittest.SynchronousTestCase):
    def test_agreesWithHandlespace(self):
        """
        The suite's own PE checksum (RFC 1071 over each PE's handle, padded,
        and identifier) is the one our handlespace keeps, which RSPLIB's
        registrars agree with; an empty set gives 0xffff.
        """
        from rserpool.conformance.peer import checksum
        from rserpool.handlespace.checksum import finish_checksum, pe_contribution

        pes = [(b"EchoPool", 0x12345678), (b"odd", 0xFFFFFFFF), (b"", 1), (b"x" * 31, 7)]
        for n in range(len(pes) + 1):
            total = sum(pe_contribution(h, i) for h, i in pes[:n])
            self.assertEqual(checksum(pes[:n]), finish_checksum(total), pes[:n])
        self.assertEqual(checksum([]), 0xFFFF)


class HarnessTests(unittest.SynchronousTestCase):
    def test_fill(self):
        """
        The PE's command line gets the pool handle and the harness's
        registrars, as endpoint strings and as ADDRESS:PORT.
        """
        from rserpool.conformance.harness import fill

        class R:
            def __init__(self, port):
                self.endpoint = "tcp:host=127.0.0.1:port=%d" % port
                self.hostport = "127.0.0.1:%d" % port

        argv = fill("pe --handle {handle} --registrar {registrar} -registrar={registrar2_hostport} "
                    "'a b'", b"cf-x", [R(1), R(2)])
        self.assertEqual(argv, ["pe", "--handle", "cf-x", "--registrar",
                                "tcp:host=127.0.0.1:port=1", "-registrar=127.0.0.1:2", "a b"])


class DocumentationTests(unittest.SynchronousTestCase):
    """
    doc/conformance.rst shows the settings and the requirements with their
    recorded outcomes as the code and tests/data/conformance/ have them.
    With C{RSERPOOL_CONFORMANCE_RECORD=1} the page's tables are written
    instead.
    """

    #: each column: registrar, PE and PU outcomes (disjoint tests)
    COLUMNS = (
        ("ours, TCP", ("ours-tcp.txt", "ours-pe-tcp.txt", "ours-pu-tcp.txt")),
        ("ours, SCTP", ("ours-sctp.txt", "ours-pe-sctp.txt")),
        ("RSPLIB 3.4, SCTP", ("rsplib-3.4.txt", "rsplib-3.4-pe.txt")),
    )

    def blocks(self):
        import os

        from rserpool.conformance.target import SETTINGS

        data = os.path.join(os.path.dirname(__file__), "data", "conformance")
        columns = []
        for label, names in self.COLUMNS:
            outcomes = {}
            for name in names:
                with open(os.path.join(data, name), encoding="utf-8") as f:
                    outcomes.update(report.parse_outcomes(f.read()))
            columns.append((label, outcomes))
        pairs = requirements.collect(runner.load(list(runner.available().values())))
        return {"settings": report.rst_settings(SETTINGS),
                "requirements": report.rst_table(pairs, columns)}

    def test_tables(self):
        import os
        import re

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "doc", "conformance.rst")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for name, block in self.blocks().items():
            pattern = re.compile(r"(\.\. BEGIN %s[^\n]*\n)(.*?)(\n\.\. END %s\n)" % (name, name),
                                 re.S)
            match = pattern.search(text)
            self.assertIsNotNone(match, "doc/conformance.rst has no %s block" % name)
            if os.environ.get("RSERPOOL_CONFORMANCE_RECORD"):
                text = text[:match.start(2)] + "\n" + block + text[match.end(2):]
                continue
            self.assertEqual(match.group(2), "\n" + block,
                             "doc/conformance.rst's %s table is not the code's: run this "
                             "test with RSERPOOL_CONFORMANCE_RECORD=1" % name)
        if os.environ.get("RSERPOOL_CONFORMANCE_RECORD"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)


class OurRegistrarPSKTests(unittest.TestCase):
    """
    A subset of the suite against our registrar with every listener on
    TLS-PSK (RFC 5355's mandatory-to-implement security): the suite's PEs,
    pool users and ENRP peer present keys of their own (C{--psk-keys},
    C{--psk-peer-keys}).
    """

    timeout = 120

    #: registration, deregistration, resolution, keep-alive, the ENRP peer
    SUBSET = (
        "test_asap.RegistrationTests", "test_asap.DeregistrationTests",
        "test_asap.HandleResolutionTests", "test_asap.KeepAliveTests.test_answered",
        "test_asap.UnreachableTests.test_threshold", "test_enrp.PresenceTests",
        "test_enrp.HandleTableTests.test_table", "test_enrp.TakeoverTests",
        "test_enrp.RacingTakeoverTests.test_lowerIdWins",
    )

    def keys(self, *identities):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            for identity in identities:
                f.write("%s %s\n" % (identity, os.urandom(32).hex()))
        os.chmod(path, 0o600)
        return path

    def registrar(self, pool, registrars):
        from tests.test_conformance_registrar import start_registrar

        return start_registrar(
            self, "--enrp-peer-networks", "127.0.0.0/8", "--psk-keys", pool,
            "--psk-peer-keys", registrars, "--psk-identity", "registrar-1")

    def suite(self, asap, enrp, pool, registrars, *only):
        from tests.test_conformance_registrar import ENRP_TIMERS, run_suite

        args = ["--asap", "tcp:host=127.0.0.1:port=%d" % asap,
                "--enrp", "tcp:host=127.0.0.1:port=%d" % enrp,
                "--keep-alive", "2", "--keep-alive-timeout", "1",
                "--psk-keys", pool, "--psk-identity", "pe-1",
                "--psk-peer-keys", registrars, "--psk-peer-identity", "suite"] + ENRP_TIMERS
        for name in only:
            args += ["--only", name]
        return run_suite(self, *args)

    async def test_subset(self):
        """
        Over TLS-PSK the subset passes as in the clear, but for the tests
        that need other hosts: one identity is one node, so they are not
        applicable (skipped).
        """
        from tests.test_conformance_registrar import mandatory_failures

        pool = self.keys("pe-1", "pe-2")
        registrars = self.keys("registrar-1", "suite")
        _, asap, enrp = await self.registrar(pool, registrars)
        code, junit, outcomes, text, suite = await self.suite(
            asap, enrp, pool, registrars, *self.SUBSET)
        self.assertEqual(mandatory_failures(junit), [], "%s\n%s" % (text, suite.describe()))
        got = report.parse_outcomes(outcomes)
        others = {"test_asap.DeregistrationTests.test_foreign",
                  "test_asap.RegistrationTests.test_identifierInUse",
                  "test_asap.RegistrationTests.test_scope",
                  "test_asap.UnreachableTests.test_threshold"}
        self.assertEqual({t: o for t, o in got.items() if o != "pass"},
                         {t: "skipped" for t in others}, text)
        self.assertGreaterEqual(len(got), 20)
        self.assertEqual(code, 0, suite.describe())

    async def test_wrongKey(self):
        """
        The suite really speaks TLS-PSK: with a key the registrar does not
        hold, the handshake fails and the registrar closes the connection
        before any answer.
        """
        pool = self.keys("pe-1")
        registrars = self.keys("registrar-1", "suite")
        _, asap, enrp = await self.registrar(pool, registrars)
        code, junit, outcomes, text, suite = await self.suite(
            asap, enrp, self.keys("pe-1"), registrars,
            "test_asap.RegistrationTests.test_accepted")
        self.assertEqual(report.parse_outcomes(outcomes),
                         {"test_asap.RegistrationTests.test_accepted": "fail"}, text)
        self.assertIn("closed the connection before Registration Response", text)
        self.assertEqual(code, 1)
