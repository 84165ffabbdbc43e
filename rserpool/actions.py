"""
What the state machines ask their adapters to do, sans I/O.

The machines (L{rserpool.asap.registrar.ASAPRegistrar},
L{rserpool.enrp.machine.ENRPServer}, the pool element and pool user
machines) never send, close, dial or set a timer themselves: their input
methods return these actions, and the adapter around them (a Twisted
service, L{rserpool.enrp.memory}'s in-memory network, a test) carries
them out, in order.  L{Runner} is the usual way to do that.

Connections are whatever the adapter handed the machine: for the
registrar side an L{rserpool.interfaces.IMessageConnection}.
"""
import attrs

__all__ = ["Send", "Close", "Schedule", "Dial", "Multicast", "Throttle", "Runner"]


# Not frozen: a registrar makes one per handle resolution, and a frozen
# attrs class takes twice as long to build (about 230 ns against 100 ns).
# Nobody changes an action once made.
@attrs.define(eq=True)
class Send:
    """
    Send C{message} over C{connection}.

    @ivar message: a message (L{rserpool.wire}), or its encoding as
        C{bytes} (the registrar's hot paths encode once, from caches).
    """

    connection: object
    message: object


@attrs.frozen
class Close:
    """
    Close C{connection}.
    """

    connection: object


@attrs.frozen
class Schedule:
    """
    Call C{machine.timer_fired(now)} at the absolute time C{when} (seconds,
    the clock of the C{now} arguments), or earlier: a spurious call is
    harmless.  An earlier request still pending stands if it is sooner.
    """

    machine: object
    when: float


@attrs.frozen
class Dial:
    """
    Open an ENRP connection to the registrar a
    L{rserpool.wire.ServerInformation} describes, and report it to the
    ENRP server with C{connection_made(conn, now, outgoing=True)}.
    """

    information: object


@attrs.frozen
class Multicast:
    """
    Send encoded C{data} (a Presence) to the ENRP multicast group.
    """

    data: bytes


@attrs.frozen
class Throttle:
    """
    Read nothing more from C{connection}'s source for C{seconds}: it is
    over its limits, and what it sends meanwhile stays in its own socket
    buffers, neither decoded nor refused one by one (RFC 5355 section 3).
    An adapter that has no such control ignores it.
    """

    connection: object
    seconds: float


class Runner:
    """
    Carries out actions: sends over the connections, closes them, and
    hands the rest to what the adapter gave.  Actions nobody takes (no
    timer for a machine, no dialler) are dropped.

    @ivar timers: C{{machine: timer}}, a timer being anything with
        C{schedule(when)} (L{rserpool.services.Wakeup}).
    @ivar dial: C{dial(server_information)}, or C{None}.
    @ivar multicast: C{multicast(data)}, or C{None}.
    """

    def __init__(self, timers=None, dial=None, multicast=None):
        self.timers = dict(timers or {})
        self.dial = dial
        self.multicast = multicast

    def __call__(self, actions, _send=Send, _bytes=bytes):
        for action in actions:
            kind = type(action)
            if kind is _send:
                message = action.message
                if type(message) is _bytes:
                    action.connection.send_encoded(message)
                else:
                    action.connection.send(message)
            elif kind is Schedule:
                timer = self.timers.get(action.machine)
                if timer is not None:
                    timer.schedule(action.when)
            elif kind is Close:
                action.connection.close()
            elif kind is Dial:
                if self.dial is not None:
                    self.dial(action.information)
            elif kind is Multicast:
                if self.multicast is not None:
                    self.multicast(action.data)
            elif kind is Throttle:
                throttle = getattr(action.connection, "throttle", None)
                if throttle is not None:
                    throttle(action.seconds)
            else:
                raise TypeError("not an action: %r" % (action,))
