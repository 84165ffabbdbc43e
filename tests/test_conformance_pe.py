"""
Our pool element against the conformance suite's PE side (issue #17):
C{rserpool conformance --pe "rserpool pe ... echo"}, the suite acting as
its two registrars on loopback over TCP.  Every MUST requirement must
pass, and the outcomes must be those of
``tests/data/conformance/ours-pe-tcp.txt``.
"""
import sys

from twisted.internet import defer
from twisted.trial import unittest

from tests.test_conformance_registrar import assert_suite_passed, run_suite

#: Our PE, re-registering every second (a registration life of 3 s).
PE = ("%s -m rserpool.cli pe --handle {handle} --registrar {registrar} "
      "--registrar {registrar2} --reregistration-interval 1 echo" % sys.executable)


class OurPoolElementTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_suite(self):
        """
        Every MUST requirement passes; the outcomes are the recorded ones.
        """
        result = yield run_suite(self, "--pe", PE, "--title", "rserpool pe over TCP")
        assert_suite_passed(self, result, "ours-pe-tcp.txt")
