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

from tests.test_conformance_registrar import changed_outcomes, mandatory_failures, run_suite

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
        code, junit, outcomes, report, suite = yield run_suite(
            self, "--pe", PE, "--title", "rserpool pe over TCP")
        failed = mandatory_failures(junit)
        self.assertEqual(failed, [], "MUST requirements not met:\n%s\n%s" % (
            report, suite.describe()))
        changed = changed_outcomes(outcomes, "ours-pe-tcp.txt")
        self.assertEqual(changed, [], "outcomes differ from tests/data/conformance/"
                         "ours-pe-tcp.txt (after a deliberate change, record them: "
                         "RSERPOOL_CONFORMANCE_RECORD=1 trial %s):\n%s" % (self.id(), report))
        self.assertEqual(code, 0, suite.describe())
