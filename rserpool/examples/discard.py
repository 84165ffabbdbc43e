"""
Discard (RFC 863) as a pool element: everything received is dropped.
"""
from twisted.internet.protocol import Factory, Protocol

__all__ = ["Discard", "server_factory"]


class Discard(Protocol):
    """
    Drops what it receives, counting the bytes.

    @ivar received: bytes received so far.
    """

    received = 0

    def dataReceived(self, data):
        self.received += len(data)


def server_factory(**options):
    """
    The discard service's factory.
    """
    return Factory.forProtocol(Discard)
