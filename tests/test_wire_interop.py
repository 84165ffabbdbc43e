"""
The codec against independent judges: real RSPLIB traffic and Wireshark's
ASAP/ENRP dissectors.
"""
import io
import os
import shutil
import subprocess
import sys

from twisted.trial import unittest

from rserpool.cli import main
from rserpool.tools import legacy
from rserpool.tools import message_examples as examples
from rserpool.wire import decode, encode

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(os.path.dirname(HERE), "..", "shared")
DATA = os.path.join(SHARED, "data")
SESSION = os.path.join(DATA, "rsplib-3.4-session.pcap")
DEMO = os.path.join(DATA, "rsplib-demo-2007.pcap")
DECODER = os.path.join(SHARED, "tools", "rserpool-decode")


def run(*argv, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        old = sys.stdin
        sys.stdin = io.StringIO(stdin)
    try:
        status = main(list(argv), out, err)
    finally:
        if stdin is not None:
            sys.stdin = old
    return status, out.getvalue(), err.getvalue()


def needs(path):
    if not os.path.exists(path):
        raise unittest.SkipTest("%s is not there (the shared/ folder beside the repository)" % path)


class RealTrafficTests(unittest.TestCase):
    """
    Every ASAP and ENRP message RSPLIB 3.4.4 sent in the recorded session
    decodes and re-encodes byte for byte.
    """

    def test_session_verifies(self):
        needs(SESSION)
        status, out, err = run("decode", "--pcap", SESSION, "--verify")
        self.assertEqual(err.strip(), "520 messages, 0 undecodable, 0 re-encode differently")
        self.assertEqual(status, 0)
        lines = out.splitlines()
        self.assertEqual(len(lines), 520)
        # first message: frame 9, the echo PE registering with PR 1
        self.assertTrue(lines[0].startswith("9 10.255.0.1:55481 > 10.255.0.1:3863 sctp ASAP Registration"), lines[0])
        self.assertIn("handle='EchoPool' pe=8100df6f", lines[0])

    def test_session_has_every_message_kind_rsplib_sends(self):
        needs(SESSION)
        from rserpool.tools.capture import iter_messages

        kinds = set()
        for rec in iter_messages(SESSION):
            m = decode(rec.payload, rec.protocol)
            self.assertEqual(encode(m), rec.payload)
            kinds.add(type(m).__name__)
        for expected in (
            "Registration",
            "RegistrationResponse",
            "Deregistration",
            "DeregistrationResponse",
            "HandleResolution",
            "HandleResolutionResponse",
            "EndpointKeepAlive",
            "EndpointKeepAliveAck",
            "ServerAnnounce",
            "Cookie",
            "CookieEcho",
            "Presence",
            "HandleTableRequest",
            "HandleTableResponse",
            "HandleUpdate",
            "ListRequest",
            "ListResponse",
        ):
            self.assertIn(expected, kinds)

    def test_verbose_tree(self):
        needs(SESSION)
        status, out, err = run("decode", "--pcap", SESSION, "-v")
        self.assertEqual(status, 0)
        self.assertIn("  pool_element: PoolElement", out)
        self.assertIn("    policy: RoundRobin (0x00000001)", out)

    def test_demo_2007(self):
        """
        The 2007 capture predates the RFCs: each message decodes, or is
        rejected naming the draft-era numbering it uses.
        """
        needs(DEMO)
        status, out, err = run("decode", "--pcap", DEMO)
        self.assertEqual(status, 1)
        self.assertEqual(err.strip(), "693 messages, 687 undecodable")
        for line in out.splitlines():
            if "undecodable" in line:
                self.assertIn("pre-RFC draft layout (RSPLIB 2.x):", line)
                self.assertIn("as RFC: ", line)
        self.assertIn("ENRP Init Takeover 00000002->00000003 target=00000001", out)


class DraftTranslationTests(unittest.TestCase):
    def test_keep_alive_2007(self):
        # frame 374 of the demo capture: Endpoint Keep Alive, draft layout
        data = bytes.fromhex("07000020000000010007000f43616c63417070506f6f6c00000c00085562e917")
        message, seen = legacy.decode_draft(data, "asap")
        self.assertEqual(message.pool_handle, b"CalcAppPool")
        self.assertEqual(message.identifier, 0x5562E917)
        self.assertEqual(message.server_id, 1)
        self.assertEqual([s[0] for s in seen], [0x0007, 0x000C])

    def test_rfc_message_is_not_draft(self):
        data = encode(examples.EXAMPLES[0][2])
        self.assertIsNone(legacy.explain(data, "asap"))


class CommandLineTests(unittest.TestCase):
    def test_hex_argument(self):
        status, out, err = run("decode", "08000018 0009000c4563686f506f6f6c 000e00085a5a0001")
        self.assertEqual(status, 0)
        self.assertEqual(out, "1 ASAP Endpoint Keep Alive Ack handle='EchoPool' pe=5a5a0001\n")

    def test_proto_enrp(self):
        status, out, err = run("decode", "--proto", "enrp", "0500000c1111111100000000")
        self.assertEqual(out, "1 ENRP List Request 11111111->00000000\n")

    def test_examples_pipe_verify(self):
        status, text, err = run("examples")
        self.assertEqual(status, 0)
        lines = text.splitlines()
        self.assertEqual(len(lines), 2 * len(examples.EXAMPLES))
        self.assertEqual(lines[0], "# asap Registration")
        status, out, err = run("decode", "--verify", "-", stdin=text)
        self.assertEqual(status, 0)
        self.assertIn("0 undecodable, 0 re-encode differently", err)
        self.assertIn("ENRP Presence", out)

    def test_verify_reports_difference(self):
        # the length field leaves out the final padding: decodes, but our
        # canonical form counts it, so --verify reports the difference
        status, out, err = run("decode", "--verify", "0500000b0009000761626300")
        self.assertEqual(status, 1)
        self.assertIn("re-encoding differs", out)

    def test_undecodable(self):
        status, out, err = run("decode", "7f000004")
        self.assertEqual(status, 1)
        self.assertIn("UNRECOGNIZED_MESSAGE", out)
        status, out, err = run("decode", "zz")
        self.assertEqual(status, 1)
        self.assertIn("not hex", out)

    def test_bad_capture(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"not a capture at all")
        status, out, err = run("decode", "--pcap", path)
        self.assertEqual(status, 2)
        self.assertEqual(len(err.splitlines()), 1)

    def test_every_message_type_has_an_example(self):
        from rserpool.wire import MESSAGE_CLASSES

        self.assertEqual({type(m) for _, _, m in examples.EXAMPLES}, set(MESSAGE_CLASSES))


class WiresharkTests(unittest.TestCase):
    """
    Every line of ``rserpool examples`` passes Wireshark's ASAP/ENRP
    dissectors in strict mode.
    """

    def setUp(self):
        if shutil.which("tshark") is None:
            raise unittest.SkipTest("tshark is not installed (apt-get install tshark)")
        needs(DECODER)

    def test_examples_strict(self):
        for protocol in ("asap", "enrp"):
            text = "\n".join(
                encode(m).hex() for p, _, m in examples.EXAMPLES if p == protocol
            )
            result = subprocess.run(
                [sys.executable, DECODER, "--strict", "--proto", protocol, "-"],
                input=text.encode(),
                capture_output=True,
                timeout=120,
            )
            self.assertEqual(
                result.returncode, 0, result.stdout.decode()[-2000:] + result.stderr.decode()
            )
            self.assertIn(b"result: OK", result.stdout + result.stderr)
