"""
Character generator (RFC 864) as a pool element: lines of 72 printable
characters, each line starting one character later, until the client goes
away.  Lines are paced (C{lines} every C{interval} seconds) so that a
pool element does not flood a loopback test.
"""
from twisted.internet.protocol import Factory, Protocol

__all__ = ["Chargen", "ChargenFactory", "server_factory", "line"]

_PRINTABLE = bytes(range(32, 127))


def line(n):
    """
    Line number C{n} of the RFC 864 pattern (72 characters and CRLF).
    """
    start = n % len(_PRINTABLE)
    doubled = _PRINTABLE + _PRINTABLE
    return doubled[start:start + 72] + b"\r\n"


class Chargen(Protocol):
    """
    Sends the pattern; ignores what it receives (RFC 864).
    """

    _call = None
    sent = 0

    def connectionMade(self):
        self._tick()

    def _tick(self):
        factory = self.factory
        self.transport.write(b"".join(line(self.sent + i) for i in range(factory.lines)))
        self.sent += factory.lines
        self._call = factory.clock.callLater(factory.interval, self._tick)

    def dataReceived(self, data):
        pass

    def connectionLost(self, reason):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class ChargenFactory(Factory):
    """
    @ivar lines: lines per tick.
    @ivar interval: seconds between ticks.
    """

    protocol = Chargen

    def __init__(self, clock=None, lines=10, interval=0.1):
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.lines = lines
        self.interval = interval


def server_factory(clock=None, lines=10, interval=0.1, **options):
    """
    The chargen service's factory.
    """
    return ChargenFactory(clock, lines, interval)
