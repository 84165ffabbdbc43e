"""
A registrar handles its PEs' timers a few hundred at a time (issue #14):
PEs registered together come due together, and a registration flood from
128 addresses (290,000 PEs in 10 s) made one timer call send tens of
thousands of keep-alives while every request waited (legitimate
resolutions: 41 % answered within 1 s).
"""
from twisted.trial import unittest

from rserpool.asap.registrar import TIMERS_PER_CALL
from rserpool.handlespace import TimerCode

from tests.test_registrar import Harness, pe_param


class TimerBatchTests(unittest.TestCase):
    def test_keep_alives_a_batch_at_a_time(self):
        h = Harness()
        pe = h.client()
        for n in range(1, 1001):
            pe.register(b"P", pe_param(n))
        pe.received()
        sent = []
        send = h.registrar._send_keep_alive

        def counting(element, now):
            sent.append(element.pe_id)
            send(element, now)

        h.registrar._send_keep_alive = counting
        batches = []
        fired = h.registrar.timer_fired

        def timer_fired(now):
            before = len(sent)
            h.run(fired(now))
            batches.append(len(sent) - before)

        h.wakeup.callback = timer_fired
        h.clock.advance(h.config.keep_alive_interval)
        # All sent within the same instant, no call sending more than a
        # batch: the reactor looks at its sockets in between.
        self.assertEqual(sorted(sent), list(range(1, 1001)))
        self.assertLessEqual(max(batches), TIMERS_PER_CALL)
        self.assertGreaterEqual(len(batches), 1000 // TIMERS_PER_CALL)
        self.assertTrue(all(p.timer_code == TimerCode.KEEP_ALIVE_TIMEOUT
                            for p in (h.hs.get(b"P", n) for n in range(1, 1001))))

    def test_due_limit(self):
        h = Harness()
        pe = h.client()
        for n in range(1, 11):
            pe.register(b"P", pe_param(n))
        due = h.hs.due(h.config.keep_alive_interval, limit=4)
        self.assertEqual(len(due), 4)
        self.assertEqual(len(h.hs.due(h.config.keep_alive_interval)), 10)
