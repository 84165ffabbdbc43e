"""
The registrar's message receivers: each feeds one mapping's events (an
L{rserpool.interfaces.IMessageReceiver}'s) to a sans-IO machine, the
ASAP registrar or the ENRP server, with the time from an injected clock,
and carries out the actions it returns with a L{rserpool.actions.Runner}.

L{rserpool.services} uses them as they are; L{rserpool.web.monitor}
extends them to count what is sent.
"""
from zope.interface import implementer

from rserpool.actions import Runner
from rserpool.interfaces import IMessageReceiver

__all__ = ["ASAPReceiver", "ENRPReceiver"]


@implementer(IMessageReceiver)
class ASAPReceiver:
    """
    Feeds the mapping's events to the sans-IO registrar, with the time, and
    carries out the actions it returns.
    """

    def __init__(self, registrar, clock, run=None):
        """
        @param run: the L{Runner} of the actions (by default one that sends
            and closes, and drops the rest).
        """
        self.registrar = registrar
        self.clock = clock
        # the bound method: a call of a Runner instance costs more
        self.run = (run if run is not None else Runner()).__call__

    def connection_made(self, connection):
        self.run(self.registrar.connection_made(connection, self.clock.seconds()))

    def message_received(self, connection, message):
        self.run(self.registrar.message_received(connection, message, self.clock.seconds()))

    def protocol_error(self, connection, error):
        self.run(self.registrar.protocol_error(connection, error, self.clock.seconds()))

    def connection_lost(self, connection):
        self.run(self.registrar.connection_lost(connection, self.clock.seconds()))


@implementer(IMessageReceiver)
class ENRPReceiver:
    """
    Feeds one ENRP mapping's events to the sans-IO L{rserpool.enrp.ENRPServer}, with the
    time and whether the connection is one we opened, and carries out the
    actions it returns.
    """

    def __init__(self, server, clock, outgoing=False, run=None):
        self.server = server
        self.clock = clock
        self.outgoing = outgoing
        self.run = (run if run is not None else Runner()).__call__

    def connection_made(self, connection):
        self.run(self.server.connection_made(connection, self.clock.seconds(), self.outgoing))

    def message_received(self, connection, message):
        self.run(self.server.message_received(connection, message, self.clock.seconds()))

    def protocol_error(self, connection, error):
        self.run(self.server.protocol_error(connection, error, self.clock.seconds()))

    def connection_lost(self, connection):
        self.run(self.server.connection_lost(connection, self.clock.seconds()))
