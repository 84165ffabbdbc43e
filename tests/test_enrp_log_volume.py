"""
Messages to the ENRP port that do not decode are logged at a bounded
rate (issue #14, log amplification): each was a line, and bench/attack.py
--flood enrp-malformed wrote 92 MB of log in 30 s (454,000 lines).
"""
from twisted.logger import Logger, formatEvent
from twisted.trial import unittest

from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig
from rserpool.codes import ErrorCause
from rserpool.enrp import ENRPConfig
from rserpool.enrp.machine import ENRPServer
from rserpool.wire import ENRPError, ProtocolError

from tests.helpers import Driven
from tests.helpers import FakeConnection
from tests.test_enrp import info


class BadMessageLogTests(unittest.TestCase):
    def test_bounded(self):
        registrar = ASAPRegistrar(RegistrarConfig(server_id=0x50))
        server = Driven(ENRPServer(registrar, ENRPConfig(), information=lambda: info(0x50)))
        lines = []
        server.log = Logger(observer=lines.append)
        server.start(0.0)
        conn = FakeConnection()
        server.connection_made(conn, 0.0)
        error = ProtocolError(ErrorCause.INVALID_VALUES, "a parameter too short", b"\x01\x00")
        for n in range(10000):
            server.protocol_error(conn, error, n / 1000.0)
        self.assertLessEqual(len(lines), 10)
        self.assertIn("bad ENRP message", formatEvent(lines[0]))
        # Each is still answered.
        self.assertEqual(len(conn.of(ENRPError)), 10000)
        server.protocol_error(conn, error, 100.0)
        self.assertIn("9990 more messages refused", formatEvent(lines[-2]))
