"""
Keep-alive acks for PEs the registrar does not know are logged at a
bounded rate (issue #14, log amplification): each was a debug line, which
twistd writes too, so a peer wrote one 130-byte line per 24-byte message
(a registration flood whose PEs expired wrote 15,759 of them in 5 s).
"""
from twisted.logger import Logger, formatEvent
from twisted.trial import unittest

from rserpool.wire import EndpointKeepAliveAck

from tests.test_registrar import Harness


class UnknownAckTests(unittest.TestCase):
    def test_bounded(self):
        h = Harness()
        lines = []
        h.registrar.log = Logger(observer=lines.append)
        flooder = h.client("127.0.0.2")
        for n in range(10000):
            flooder.send(EndpointKeepAliveAck(b"P", 0x10000 + n))
        self.assertEqual(len(lines), 200)
        self.assertEqual(formatEvent(lines[0]), "keep-alive ack for unknown 00010000 in b'P'")
        h.clock.advance(10)
        flooder.send(EndpointKeepAliveAck(b"P", 1))
        self.assertEqual(formatEvent(lines[200]), "9800 log line(s) left out (more than 100 a second)")
