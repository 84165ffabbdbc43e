"""
Our pool user against the conformance suite's PU side (issue #17):
C{rserpool conformance --pu "rserpool terminal ..."}, the suite acting as
its registrar on loopback over TCP and handing it a dead PE, then a live
one.  Every MUST requirement must pass, and the outcomes must be those of
``tests/data/conformance/ours-pu-tcp.txt``.
"""
import sys

from twisted.internet import defer
from twisted.trial import unittest

from tests.test_conformance_registrar import assert_suite_passed, run_suite

#: Our PU: Basic Mode, connecting to a PE of the pool at once.
PU = ("%s -m rserpool.cli terminal --registrar {registrar} --mode basic {handle}"
      % sys.executable)


class OurPoolUserTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_suite(self):
        """
        Every MUST requirement passes; the outcomes are the recorded ones.
        """
        result = yield run_suite(self, "--pu", PU, "--title", "rserpool terminal over TCP")
        assert_suite_passed(self, result, "ours-pu-tcp.txt")
