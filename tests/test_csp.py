"""
RSPLIB's Component Status Protocol (issue #16): the report's wire format,
and RSPLIB's own C{cspmonitor} on loopback listing our registrar, a
C{rserpool pe} and a C{rserpool terminal}, with their associations (its
output parsed).
"""
import re
import shutil
import sys

from twisted.internet import defer
from twisted.trial import unittest

from rserpool.transport.csp_reporter import parse_csp_address
from rserpool.wire.csp import (
    GROUP_POOL_ELEMENT,
    GROUP_REGISTRAR,
    Association,
    StatusReport,
    component_id,
    decode_report,
    encode_report,
)
from tests.helpers import TWISTD, bound_udp_port, eventually, listening_port, spawn, start

CSPMONITOR = shutil.which("cspmonitor")
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


class WireTests(unittest.TestCase):
    def test_layout(self):
        """
        288 bytes and 24 per association, fields where
        componentstatuspackets.h puts them.
        """
        report = StatusReport(component_id(GROUP_REGISTRAR, 0x5eed), 1500000, 250000,
                              "host: 127.0.0.1:3863", "1[1] PEs in 1 Pool, 0 Peers", -1.0,
                              (Association(component_id(GROUP_REGISTRAR, 7), ppid=12),))
        data = encode_report(report)
        self.assertEqual(len(data), 288 + 24)
        self.assertEqual(data[:4], b"\x01\x00\x01\x38")                # type, flags, length
        self.assertEqual(data[4:8], b"\x00\x00\x02\x00")               # version 0x0200
        self.assertEqual(data[8:16], b"\x01\x00\x00\x00\x00\x00\x5e\xed")  # group 1, id
        self.assertEqual(int.from_bytes(data[16:24], "big"), 1500000)  # microseconds up
        self.assertEqual(int.from_bytes(data[24:28], "big"), 250000)   # interval
        self.assertEqual(data[28:48], b"host: 127.0.0.1:3863")
        self.assertEqual(data[156:183], b"1[1] PEs in 1 Pool, 0 Peers")
        self.assertEqual(data[284:288], b"\xff\xff\x00\x01")           # no workload, 1
        self.assertEqual(data[288:296], b"\x01" + b"\x00" * 6 + b"\x07")
        self.assertEqual(data[296:304], b"\xff" * 8)                   # duration unknown
        self.assertEqual(data[304:312], b"\x00\x00\x00\x06\x00\x00\x00\x0c")  # TCP, ENRP
        self.assertEqual(decode_report(data), report)

    def test_final_and_workload(self):
        report = StatusReport(component_id(GROUP_POOL_ELEMENT, 1), 0, 1, "x" * 300, "é" * 200,
                              0.5, final=True)
        back = decode_report(encode_report(report))
        self.assertTrue(back.final)
        self.assertEqual(back.location, "x" * 127)
        self.assertEqual(back.status, "é" * 63)
        self.assertAlmostEqual(back.workload, 0.5, places=4)

    def test_refused(self):
        data = bytearray(encode_report(StatusReport(1, 0, 1)))
        data[7] = 1
        self.assertRaises(ValueError, decode_report, bytes(data))
        self.assertRaises(ValueError, decode_report, b"\x01" * 100)
        self.assertRaises(ValueError, decode_report, encode_report(StatusReport(1, 0, 1)) + b"x")

    def test_addresses(self):
        self.assertEqual(parse_csp_address("127.0.0.1"), ("127.0.0.1", 2960))
        self.assertEqual(parse_csp_address("monitor:3000"), ("monitor", 3000))
        self.assertEqual(parse_csp_address("[::1]:3000"), ("::1", 3000))
        self.assertEqual(parse_csp_address("::1"), ("::1", 2960))
        self.assertRaises(ValueError, parse_csp_address, "host:x")
        self.assertRaises(ValueError, parse_csp_address, "host:0")


def components(output):
    """
    What cspmonitor shows: C{{"PR $5eed0017": (location, status,
    [association lines])}} from its latest screen.
    """
    text = _ANSI.sub(b"", output).decode("utf-8", "replace")
    screens = text.split("Current Component Status")
    last = screens[-1] if len(screens) > 1 else text
    found = {}
    current = None
    for line in last.splitlines():
        m = re.match(r'^((?:PR|PE|PU) \$[0-9a-f]+) \[(.*)\]\s+U=\S+ l=\S+ A=\d+.*"(.*)"', line)
        if m:
            current = m.group(1)
            found[current] = (m.group(2), m.group(3), [])
            continue
        m = re.match(r"^\s+-> ((?:PR|PE|PU) \$[0-9a-f]+) (\S+)", line)
        if m and current is not None:
            found[current][2].append("%s %s" % (m.group(1), m.group(2)))
    return found


class MonitorTests(unittest.TestCase):
    timeout = 60

    if CSPMONITOR is None:
        skip = "RSPLIB's cspmonitor is not installed (apt-get install rsplib-tools)"

    @defer.inlineCallbacks
    def test_our_components(self):
        # cspmonitor takes port 0 but does not say which port it got.
        monitor = start(self, [CSPMONITOR, "-localaddress=127.0.0.1:0",
                               "-updateinterval=200", "-full"], name="cspmonitor")
        yield monitor.wait_for(b"Component Status Monitor")
        port = yield eventually(lambda: bound_udp_port(monitor.pid), "cspmonitor's UDP port")
        csp = "127.0.0.1:%d" % port
        registrar = start(self, [
            sys.executable, "-c", TWISTD, "-n", "--pidfile=", "enrp",
            "--asap", "tcp:0:interface=127.0.0.1", "--enrp", "none",
            "--id", "0x5eed0017", "--csp", csp, "--csp-interval", "0.2",
        ], name="twistd enrp")
        asap = yield listening_port(registrar, "ASAP")
        yield registrar.wait_for(b"ready")
        endpoint = "tcp:127.0.0.1:%d" % asap
        pe = spawn(self, "pe", "--handle", "EchoPool", "--registrar", endpoint,
                   "--identifier", "0000c5b1", "--csp", csp, "--csp-interval", "0.2", "echo")
        yield pe.wait_for(b"registered")
        terminal = spawn(self, "terminal", "EchoPool", "--registrar", endpoint, "--wait", "30",
                         "--csp", csp, "--csp-interval", "0.2", stdin=b"hello\n")
        yield terminal.wait_for(b"hello")

        wanted = {"PR $5eed0017", "PE $0000c5b1"}
        seen = {}
        for _ in range(100):
            seen = components(monitor.out)
            if wanted <= set(seen) and any(k.startswith("PU $") for k in seen) \
                    and seen["PE $0000c5b1"][2]:
                break
            yield monitor.wait_for(b"Current Component Status", start=len(monitor.out))
        self.assertTrue(wanted <= set(seen), (seen, _ANSI.sub(b"", monitor.out)[-1000:]))
        location, status, associations = seen["PR $5eed0017"]
        self.assertEqual(status, "1[1] PEs in 1 Pool, 0 Peers")
        self.assertIn("127.0.0.1:%d" % asap, location)
        location, status, associations = seen["PE $0000c5b1"]
        self.assertEqual(status, "Registered in EchoPool")
        self.assertRegex(location, r": 127\.0\.0\.1:\d+$")
        self.assertEqual(associations, ["PR $5eed0017 ASAP/TCP"])
        users = [k for k in seen if k.startswith("PU $")]
        self.assertEqual(len(users), 1)
        location, status, associations = seen[users[0]]
        self.assertEqual(status, "Connected to PE $0000c5b1 of EchoPool")
        self.assertEqual(associations, ["PE $0000c5b1 Data/TCP"])
