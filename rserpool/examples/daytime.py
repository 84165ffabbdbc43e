"""
Daytime (RFC 867) as a pool element: one line with the date and time,
then the session ends (on purpose: in Enhanced Mode the pool user does not
fail over).
"""
import time

from twisted.internet.protocol import Factory, Protocol

__all__ = ["Daytime", "DaytimeFactory", "server_factory", "daytime_line"]


def daytime_line(seconds):
    """
    The RFC 867 line for C{seconds} since the epoch (UTC), e.g.
    C{b"Tuesday, February 22, 1982 17:37:43-UTC\\r\\n"}.
    """
    return time.strftime("%A, %B %d, %Y %H:%M:%S-UTC\r\n", time.gmtime(seconds)).encode("ascii")


class Daytime(Protocol):
    """
    Writes the time and closes.
    """

    def connectionMade(self):
        self.transport.write(daytime_line(self.factory.clock.seconds()))
        self.transport.loseConnection()


class DaytimeFactory(Factory):
    """
    @ivar clock: the L{IReactorTime} the time is read from.
    """

    protocol = Daytime

    def __init__(self, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock


def server_factory(clock=None, **options):
    """
    The daytime service's factory.
    """
    return DaytimeFactory(clock)
