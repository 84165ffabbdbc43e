"""
The registrar's collector schedule (rserpool.services.collector): young
collections less often, survivors of a full collection frozen, one full
sweep over everything at an interval, the process's collector put back
when it stops; and each collection timed.
"""
from twisted.internet import task
from twisted.trial import unittest

from rserpool.services.collector import CHECK_INTERVAL, CollectorPauses, CollectorService


class FakeGC:
    def __init__(self):
        self.threshold = (700, 10, 10)
        self.callbacks = []
        self.calls = []

    def get_threshold(self):
        return self.threshold

    def set_threshold(self, *values):
        self.threshold = values
        self.calls.append(("set_threshold",) + values)

    def freeze(self):
        self.calls.append(("freeze",))

    def unfreeze(self):
        self.calls.append(("unfreeze",))

    def collect(self):
        self.calls.append(("collect",))
        return 3

    def run(self, generation, took, clock):
        # what CPython does around one collection
        for callback in list(self.callbacks):
            callback("start", {"generation": generation})
        clock.advance(took)
        for callback in list(self.callbacks):
            callback("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


class CollectorServiceTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.gc = FakeGC()
        self.service = CollectorService(self.clock, young=50000, sweep=300.0, gc=self.gc)
        self.timer = task.Clock()
        self.service.pauses.clock = self.timer.seconds

    def test_thresholds_and_restore(self):
        self.service.startService()
        self.assertEqual(self.gc.threshold, (50000, 20, 10))
        self.assertEqual(self.gc.callbacks, [self.service.pauses])
        self.service.stopService()
        self.assertEqual(self.gc.threshold, (700, 10, 10))
        self.assertEqual(self.gc.callbacks, [])
        self.assertIn(("unfreeze",), self.gc.calls)

    def test_never_lowers(self):
        self.gc.threshold = (100000, 50, 10)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(self.gc.threshold, (100000, 50, 10))

    def test_freeze_after_full_collection(self):
        """
        Survivors of a full collection are frozen at the next look, not
        from inside the collector's callback (which may run in the middle
        of any reactor operation); young collections freeze nothing.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.gc.run(0, 0.002, self.timer)
        self.gc.run(1, 0.004, self.timer)
        self.clock.advance(CHECK_INTERVAL)
        self.assertNotIn(("freeze",), self.gc.calls)
        self.gc.run(2, 0.150, self.timer)
        self.assertNotIn(("freeze",), self.gc.calls)
        self.clock.advance(CHECK_INTERVAL)
        self.assertEqual(self.gc.calls.count(("freeze",)), 1)
        self.clock.advance(CHECK_INTERVAL)
        self.assertEqual(self.gc.calls.count(("freeze",)), 1)

    def test_sweep(self):
        self.service.startService()
        self.addCleanup(self.service.stopService)
        del self.gc.calls[:]
        self.clock.advance(299)
        self.assertNotIn(("collect",), self.gc.calls)
        self.clock.advance(1)
        self.assertEqual([c for c in self.gc.calls if c[0] != "set_threshold"],
                         [("unfreeze",), ("collect",), ("freeze",)])
        self.assertEqual(self.service.sweeps, 1)

    def test_thresholds_only(self):
        service = CollectorService(self.clock, sweep=0, gc=self.gc)
        service.startService()
        self.clock.advance(3600)
        service.stopService()
        self.assertEqual([c[0] for c in self.gc.calls], ["set_threshold", "unfreeze",
                                                         "set_threshold"])
        self.assertEqual(self.gc.threshold, (700, 10, 10))

    def test_last_one_restores(self):
        """
        Two registrars in one process: the collector is put back as it was
        when the last one stops, whatever the order.
        """
        other = CollectorService(self.clock, young=80000, gc=self.gc)
        self.service.startService()
        other.startService()
        self.assertEqual(self.gc.threshold, (80000, 20, 10))
        self.service.stopService()
        self.assertEqual(self.gc.threshold, (80000, 20, 10))
        self.assertNotIn(("unfreeze",), self.gc.calls)
        other.stopService()
        self.assertEqual(self.gc.threshold, (700, 10, 10))
        self.assertIn(("unfreeze",), self.gc.calls)

    def test_stop_without_start(self):
        self.service.stopService()
        self.assertEqual(self.gc.calls, [])


class PausesTests(unittest.TestCase):
    def test_timed_by_generation(self):
        clock = task.Clock()
        pauses = CollectorPauses(clock.seconds)
        gc = FakeGC()
        gc.callbacks.append(pauses)
        gc.run(0, 0.001, clock)
        gc.run(0, 0.003, clock)
        gc.run(2, 0.2, clock)
        self.assertEqual(pauses.count, [2, 0, 1])
        self.assertAlmostEqual(pauses.seconds[0], 0.004)
        self.assertAlmostEqual(pauses.longest[0], 0.003)
        self.assertAlmostEqual(pauses.longest[2], 0.2)
        self.assertEqual(pauses.full_runs, 1)

    def test_stop_without_start_ignored(self):
        pauses = CollectorPauses()
        pauses("stop", {"generation": 2})
        self.assertEqual(pauses.count, [0, 0, 0])
