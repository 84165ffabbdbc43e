"""
What the stream decoder hands over holds no reference cycle: under a
flood of bad messages every error is freed at once (issue #14: a
registrar grew by 140 MB in 20 s of mutated messages, each error keeping
its traceback, the decoder's frame and the read's other messages until
the garbage collector ran).
"""
import gc
import weakref

from twisted.trial import unittest

from rserpool.wire import ProtocolError, StreamDecoder

#: A Handle Resolution whose only parameter has an unknown type.
BAD = bytes((0x05, 0, 0, 8, 0xFF, 0xFF, 0, 4))


class DecoderCycleTests(unittest.TestCase):
    def test_errors_freed_at_once(self):
        gc.disable()
        self.addCleanup(gc.enable)
        items = StreamDecoder("asap").feed(BAD * 10)
        self.assertIsInstance(items[0], ProtocolError)
        refs = [weakref.ref(item) for item in items]
        del items
        self.assertEqual([ref() for ref in refs], [None] * 10)

    def test_error_still_says_why(self):
        (error,) = StreamDecoder("asap").feed(BAD)
        self.assertTrue(error.report)
        self.assertEqual(error.info, BAD)
