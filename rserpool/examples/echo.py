"""
Echo (RFC 862) as a pool element: every message is sent back.
"""
from twisted.internet.protocol import Factory, Protocol

__all__ = ["Echo", "server_factory"]


class Echo(Protocol):
    """
    Sends back what it receives (one message for one message in Enhanced
    Mode).
    """

    def dataReceived(self, data):
        self.transport.write(data)


def server_factory(**options):
    """
    The echo service's factory.
    """
    return Factory.forProtocol(Echo)
