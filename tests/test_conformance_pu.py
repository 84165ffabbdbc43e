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

from tests.test_conformance_registrar import changed_outcomes, mandatory_failures, run_suite

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
        code, junit, outcomes, report, suite = yield run_suite(
            self, "--pu", PU, "--title", "rserpool terminal over TCP")
        failed = mandatory_failures(junit)
        self.assertEqual(failed, [], "MUST requirements not met:\n%s\n%s" % (
            report, suite.describe()))
        changed = changed_outcomes(outcomes, "ours-pu-tcp.txt")
        self.assertEqual(changed, [], "outcomes differ from tests/data/conformance/"
                         "ours-pu-tcp.txt (after a deliberate change, record them: "
                         "RSERPOOL_CONFORMANCE_RECORD=1 trial %s):\n%s" % (self.id(), report))
        self.assertEqual(code, 0, suite.describe())
