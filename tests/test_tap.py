"""
Tests of C{twistd enrp}: options, configuration files, L{makeService} and
the plugin.
"""
import os
import socket
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from rserpool import tap
from rserpool.asap.scope import Scope
from rserpool.services import RegistrarService

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(unittest.TestCase):
    def test_defaults(self):
        """
        With no arguments: one ASAP listener on localhost, RSPLIB's timers,
        no announcements, ENRP on localhost port 9901 (so that ``rserpool
        dump`` works against a default registrar), a random id.
        """
        s = parse().settings
        self.assertEqual(s["asap"], ["tcp:3863:interface=127.0.0.1"])
        self.assertEqual(s["keep-alive-interval"], 5.0)
        self.assertEqual(s["keep-alive-timeout"], 5.0)
        self.assertEqual(s["max-bad-pe-reports"], 3)
        self.assertEqual(s["max-hr-items"], 3)
        self.assertEqual(s["max-hr-items-cap"], 128)
        self.assertEqual(s["announce-interval"], 1.0)
        self.assertEqual(s["announce-group"], ("239.0.0.50", 3863))
        self.assertFalse(s["announce"])
        self.assertEqual(s["enrp"], "tcp:9901:interface=127.0.0.1")
        self.assertFalse(s["enrp-multicast"])
        self.assertEqual(s["enrp-multicast-group"], ("239.0.0.51", 9901))
        self.assertIsNone(s["id"])
        self.assertIsNone(s["min-address-scope"])
        self.assertEqual(s["peer-heartbeat-cycle"], 2.444)
        self.assertEqual(s["peer"], [])
        self.assertEqual((s["max-hr-rate"], s["max-eu-rate"]), (0.0, 0.0))

    def test_flood_limits(self):
        """
        C{--max-hr-rate} and C{--max-eu-rate} reach the registrar's
        configuration; 0, the default, means no limit.
        """
        config = tap.makeService(parse("--max-hr-rate", "20", "--max-eu-rate", "2.5")).registrar.config
        self.assertEqual((config.max_hr_rate, config.max_eu_rate), (20.0, 2.5))
        config = tap.makeService(parse()).registrar.config
        self.assertEqual((config.max_hr_rate, config.max_eu_rate), (None, None))

    def test_enrp_off(self):
        """
        C{--enrp none} turns ENRP off.
        """
        self.assertIsNone(parse("--enrp", "none").settings["enrp"])

    def test_enrp_settings(self):
        """
        The ENRP timers reach the ENRP server's configuration.
        """
        service = tap.makeService(parse(
            "--peer-heartbeat-cycle", "0.5", "--peer-max-time-last-heard", "1",
            "--peer-max-time-no-response", "1.5", "--takeover-expiry", "2",
            "--mentor-discovery-timeout", "3", "--max-elements-per-ht-request", "64",
            "--enrp-multicast", "--enrp-peer-networks", "127.0.0.0/8",
            "--peer", "127.0.0.1:9902"))
        config = service.enrp_config
        self.assertEqual((config.heartbeat_cycle, config.max_time_last_heard,
                          config.max_time_no_response, config.takeover_expiry,
                          config.mentor_discovery_timeout, config.max_elements_per_ht_request),
                         (0.5, 1.0, 1.5, 2.0, 3.0, 64))
        self.assertEqual(service.peering.multicast, ("239.0.0.51", 9901))
        self.assertEqual(service.peers, ["127.0.0.1:9902"])

    def test_values(self):
        s = parse(
            "--asap", "tcp:3863", "--asap", "tcp6:3863", "--id", "0x1234abcd",
            "--keep-alive-interval", "1.5", "--max-hr-items", "7",
            "--min-address-scope", "global", "--announce",
            "--announce-group", "239.1.2.3:4000", "--enrp", "tcp:9901",
            "--peer", "192.0.2.1:9901", "--peer", "192.0.2.2:9901",
        ).settings
        self.assertEqual(s["asap"], ["tcp:3863", "tcp6:3863"])
        self.assertEqual(s["id"], 0x1234ABCD)
        self.assertEqual(s["keep-alive-interval"], 1.5)
        self.assertEqual(s["max-hr-items"], 7)
        self.assertEqual(s["min-address-scope"], Scope.GLOBAL)
        self.assertTrue(s["announce"])
        self.assertEqual(s["announce-group"], ("239.1.2.3", 4000))
        self.assertEqual(s["enrp"], "tcp:9901")
        self.assertEqual(s["peer"], ["192.0.2.1:9901", "192.0.2.2:9901"])

    def test_decimal_id(self):
        self.assertEqual(parse("--id", "1234").settings["id"], 1234)

    def test_bad_values(self):
        """
        Bad values give one-line usage errors.
        """
        for argv in (
            ["--id", "0"],
            ["--id", "0x1ffffffff"],
            ["--id", "zz"],
            ["--keep-alive-interval", "soon"],
            ["--keep-alive-interval", "0"],
            ["--max-bad-pe-reports", "0"],
            ["--max-hr-items", "500"],
            ["--min-address-scope", "planet"],
            ["--announce-group", "nowhere"],
            ["--asap", "tcp:notaport"],
            ["--asap", "nosuchtransport:1"],
            ["--enrp", "tcp:x"],
            ["--max-hr-rate", "-1"],
            ["--max-eu-rate", "fast"],
            ["--max-eu-rate", "nan"],
        ):
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertNotIn("\n", str(e), argv)

    def test_help_lists_options(self):
        text = str(tap.Options())
        for name in ("--asap", "--enrp", "--peer", "--id", "--config", "--keep-alive-interval",
                     "--max-bad-pe-reports", "--min-address-scope", "--announce"):
            self.assertIn(name, text)


class ConfigFileTests(unittest.TestCase):
    def write(self, text, suffix):
        path = self.mktemp() + suffix
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_toml(self):
        path = self.write(
            'asap = ["tcp:4000:interface=127.0.0.1", "tcp:4001"]\n'
            'keep-alive-interval = 2.5\n'
            'max_bad_pe_reports = 5\n'
            'announce = true\n'
            'min-address-scope = "site-local"\n',
            ".toml",
        )
        s = parse("--config", path).settings
        self.assertEqual(s["asap"], ["tcp:4000:interface=127.0.0.1", "tcp:4001"])
        self.assertEqual(s["keep-alive-interval"], 2.5)
        self.assertEqual(s["max-bad-pe-reports"], 5)
        self.assertTrue(s["announce"])
        self.assertEqual(s["min-address-scope"], Scope.SITE_LOCAL)

    def test_toml_table(self):
        path = self.write("[enrp]\nid = 0x42\n", ".toml")
        self.assertEqual(parse("--config", path).settings["id"], 0x42)

    def test_ini(self):
        path = self.write(
            "[enrp]\nasap = tcp:4000, tcp:4001\nkeep-alive-timeout = 3\nannounce = no\n", ".ini"
        )
        s = parse("--config", path).settings
        self.assertEqual(s["asap"], ["tcp:4000", "tcp:4001"])
        self.assertEqual(s["keep-alive-timeout"], 3.0)
        self.assertFalse(s["announce"])

    def test_command_line_wins(self):
        path = self.write("keep-alive-interval = 2.5\nasap = ['tcp:4000']\n", ".toml")
        s = parse("--config", path, "--keep-alive-interval", "9", "--asap", "tcp:5000").settings
        self.assertEqual(s["keep-alive-interval"], 9.0)
        self.assertEqual(s["asap"], ["tcp:5000"])

    def test_unknown_setting(self):
        path = self.write("colour = 'blue'\n", ".toml")
        e = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("colour", str(e))

    def test_bad_value_in_file(self):
        path = self.write("max-hr-items = 0\n", ".toml")
        self.assertRaises(usage.UsageError, parse, "--config", path)

    def test_missing_file(self):
        e = self.assertRaises(usage.UsageError, parse, "--config", "/nonexistent/enrp.toml")
        self.assertIn("cannot read", str(e))

    def test_unparsable(self):
        path = self.write("this is [ not a config\n", ".conf")
        e = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertNotIn("\n", str(e))


class MakeServiceTests(unittest.TestCase):
    def test_service(self):
        options = parse("--id", "0x99", "--keep-alive-timeout", "2", "--max-increment", "2")
        service = tap.makeService(options)
        self.assertIsInstance(service, RegistrarService)
        config = service.registrar.config
        self.assertEqual(config.server_id, 0x99)
        self.assertEqual(config.keep_alive_timeout, 2.0)
        self.assertEqual(config.max_increment, 2)
        self.assertIsNone(service.announce)
        self.assertEqual(service.asap_endpoints, ["tcp:3863:interface=127.0.0.1"])

    def test_collector(self):
        """
        C{twistd enrp} runs the collector schedule of
        L{rserpool.services.collector} as one of the registrar's services.
        """
        service = tap.makeService(parse("--gc-sweep-interval", "120"))
        collector = service.getServiceNamed("collector")
        self.assertIn(collector, list(service))
        self.assertEqual(collector.sweep_interval, 120.0)
        self.assertEqual(tap.makeService(parse()).getServiceNamed("collector").sweep_interval, 0)
        self.assertRaises(usage.UsageError, parse, "--gc-sweep-interval", "-1")

    def test_random_id(self):
        a = tap.makeService(parse()).registrar.server_id
        b = tap.makeService(parse()).registrar.server_id
        self.assertNotEqual(a, b)
        self.assertTrue(a and b)

    def test_occupied_port(self):
        """
        A port in use is one line, not a traceback.
        """
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        service = tap.makeService(parse("--asap", "tcp:%d:interface=127.0.0.1" % port))
        e = self.assertRaises(SystemExit, service.startService)
        self.assertIn("cannot listen for ASAP", str(e))
        self.assertIn("address already in use", str(e))
        self.assertNotIn("\n", str(e))
        return service.stopService()


class PluginTests(unittest.TestCase):
    def test_plugin(self):
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("enrp", makers)
        self.assertIs(makers["enrp"].options, tap.Options)

    def test_twistd_help(self):
        """
        C{twistd --help} lists C{enrp} (the plugin is found on the path).
        """
        env = dict(os.environ, PYTHONPATH=HERE)
        out = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"], env=env, capture_output=True,
            text=True, timeout=60,
        )
        self.assertIn("enrp", out.stdout)


class LimitOptionsTests(unittest.TestCase):
    """
    The limits of issue #14 are on by default and tunable (command line
    and --config).
    """

    def service(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv) + ["--enrp", "none"])
        return options, tap.makeService(options)

    def test_defaults_on(self):
        _, service = self.service()
        sources = service.registrar.config.sources
        self.assertEqual((sources.max_pes, sources.max_pools, sources.hr_rate, sources.eu_rate),
                         (10000, 1000, 2000.0, 10.0))
        limits = service.connection_limits
        self.assertEqual((limits.first_message, limits.message, limits.idle,
                          limits.output_buffer, limits.stalled, limits.per_source),
                         (10.0, 10.0, 600.0, 1 << 20, 60.0, 1024))
        self.assertGreater(service.connection_budget.total, 16)

    def test_tuned_and_off(self):
        _, service = self.service(
            "--max-pes-per-source", "0", "--max-hr-rate-per-source", "50",
            "--idle-timeout", "120", "--max-connections-per-source", "8",
            "--max-connections", "500", "--ipv6-source-prefix", "48")
        sources = service.registrar.config.sources
        self.assertEqual((sources.max_pes, sources.hr_rate, sources.ipv6_prefix), (None, 50.0, 48))
        limits = service.connection_limits
        self.assertEqual((limits.idle, limits.per_source, limits.total), (120.0, 8, 500))
        self.assertEqual(service.connection_budget.total, 500)

    def test_idle_longer_than_keep_alive(self):
        error = self.assertRaises(usage.UsageError, tap.Options().parseOptions,
                                  ["--idle-timeout", "8"])
        self.assertIn("--idle-timeout (8 s) must be longer", str(error))
