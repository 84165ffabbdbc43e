"""
The pool element side of ASAP (RFC 5352 sections 3.1-3.7), sans I/O.

L{PoolElementMachine} keeps one pool element registered: it hunts for a
home registrar (a static list of endpoint descriptions, and registrars
learned from Server Announce; the hunt is L{rserpool.asap.hunt}, which the
pool user shares), registers with the pool handle, the user
transport and the policy, re-registers before the registration life ends
and whenever the policy (a load) changes, answers Endpoint Keep Alive,
follows a Keep Alive with the H flag to a new home registrar, hunts again
when its home registrar goes away, and deregisters when stopped.

It imports no reactor.  Every input method takes the current time; what
to do comes back as a list of actions from L{PoolElementMachine.actions}
(L{Connect}, L{CancelConnect}, L{Send}, L{Close}) mixed with events for the
application (L{Registered}, L{RegistrationFailed}, L{Deregistered},
L{HomeChanged}, L{RegistrarProblem}), and the adapter calls L{PoolElementMachine.timer} at
L{PoolElementMachine.next_deadline}.  Connections are opaque tokens to the
machine: whatever the adapter passes to L{PoolElementMachine.connected}.
"""
import attrs

from rserpool.actions import Close, Send
from rserpool.asap.hunt import CancelConnect, Connect, Hunting, RegistrarHunt
from rserpool.codes import ErrorCause, cause_name
from rserpool.states import State
from rserpool.wire import (
    ASAPError,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
)

__all__ = [
    "PoolElementConfig",
    "PoolElementMachine",
    "Connect",
    "CancelConnect",
    "Send",
    "Close",
    "Registered",
    "RegistrationFailed",
    "Deregistered",
    "HomeChanged",
    "RegistrarProblem",
    "IdentifierChanged",
    "new_identifier",
    "effective_transport",
    "IDLE",
    "HUNTING",
    "REGISTERING",
    "REGISTERED",
    "DEREGISTERING",
    "STOPPED",
    "FAILED",
    "PE_MOVES",
]

#: Fresh identifiers a PE tries in a row when each is refused as in use.
MAX_IDENTIFIER_RENEWALS = 5

#: States of L{PoolElementMachine}.
IDLE = "idle"
HUNTING = "hunting"
REGISTERING = "registering"
REGISTERED = "registered"
DEREGISTERING = "deregistering"
STOPPED = "stopped"
FAILED = "failed"

#: Every move of L{PoolElementMachine} (RFC 5352 sections 3.1 to 3.7): a
#: stopped, failed or new PE hunts when started and stops when stopped; a
#: hunt ends in a registration, or in a registrar's H-flag Keep Alive
#: (section 3.4: it took us over, we are registered with it); a
#: registration is answered (registered), refused (failed, or registering
#: again with a fresh identifier) or lost (hunting); deregistration ends
#: stopped.
PE_MOVES = {
    IDLE: {HUNTING, STOPPED},
    HUNTING: {HUNTING, REGISTERING, REGISTERED, DEREGISTERING, STOPPED},
    REGISTERING: {REGISTERING, REGISTERED, HUNTING, FAILED, DEREGISTERING, STOPPED},
    REGISTERED: {REGISTERED, HUNTING, FAILED, DEREGISTERING, STOPPED},
    DEREGISTERING: {STOPPED},
    STOPPED: {HUNTING, STOPPED},
    FAILED: {HUNTING, STOPPED},
}


def new_identifier(rng):
    """
    A random, non-zero 32-bit PE identifier (RFC 5352 section 3.1: the PE
    chooses its identifier at random).

    @param rng: a C{random.Random}.
    @return: an C{int} between 1 and 0xffffffff.
    """
    while True:
        value = rng.getrandbits(32)
        if value:
            return value


@attrs.frozen
class PoolElementConfig:
    """
    What a pool element registers and its timers.  Defaults are RSPLIB's.

    @ivar pool_handle: the pool handle (C{bytes}).
    @ivar policy: the L{Policy} (with the load, for adaptive policies).
    @ivar identifier: the PE identifier (random when built by
        L{PoolElementMachine} without one).
    @ivar reregistration_interval: seconds between re-registrations (RSPLIB
        30 s).
    @ivar registration_life: the registration life in seconds sent to the
        registrar; C{None} means three re-registration intervals (RSPLIB).
    @ivar response_timeout: seconds to wait for a Registration or
        Deregistration Response (RSPLIB's registrar response timeout, 3 s).
    @ivar connect_timeout: seconds to wait for a connection to a registrar
        (RSPLIB 7.5 s).
    @ivar hunt_retry_delay: seconds to wait after every known registrar was
        tried without success, before the next round of the hunt.
    @ivar identifier_fixed: whether the identifier was chosen by the user;
        otherwise, refused as Non-unique PE Identifier, the PE registers
        again with a fresh random one (L{IdentifierChanged}).
    """

    pool_handle: bytes = attrs.field(converter=bytes)
    policy: Policy = attrs.field(validator=attrs.validators.instance_of(Policy))
    identifier: int = None
    reregistration_interval: float = 30.0
    registration_life: float = None
    response_timeout: float = 3.0
    connect_timeout: float = 7.5
    hunt_retry_delay: float = 1.0
    identifier_fixed: bool = False

    @property
    def life_ms(self):
        """
        The registration life in milliseconds, as the Pool Element parameter
        carries it.
        """
        life = self.registration_life
        if life is None:
            life = 3 * self.reregistration_interval
        return min(0x7FFFFFFF, int(round(life * 1000)))


# -- actions --------------------------------------------------------------
#
# Connect and CancelConnect are the hunt's (rserpool.asap.hunt).


# -- events ---------------------------------------------------------------


@attrs.frozen
class Registered:
    """
    A registrar accepted the registration.

    @ivar endpoint: the registrar's endpoint description (C{None} for a
        registrar that connected to us).
    @ivar reregistration: C{False} for the first acceptance after
        L{PoolElementMachine.start} or after a hunt.
    """

    endpoint: object
    reregistration: bool


@attrs.frozen
class RegistrationFailed:
    """
    The registrar rejected the registration (RFC 5352 section 3.1: the R
    flag and an Operation Error), or answered it with an ASAP Error (RSPLIB
    does, e.g. for addresses below its minimum scope).  The machine stops.

    @ivar cause: the first error cause code (an L{ErrorCause} value, or one
        of RSPLIB's own, L{rserpool.codes.RSPLIB_CAUSES}).
    @ivar causes: every L{rserpool.wire.Cause}.
    @ivar endpoint: the registrar's endpoint description.
    @ivar pool_element: the L{PoolElement} parameter that was refused (what
        was registered: its user transport and policy), or C{None}.
    @ivar local: the local addresses of the connection to the registrar.
    """

    cause: int
    causes: tuple = ()
    endpoint: object = None
    pool_element: object = None
    local: tuple = ()

    @property
    def cause_name(self):
        """
        The cause's name, e.g. C{"INCONSISTENT_POOLING_POLICY"} or
        C{"RSPLIB_INVALID_VALUE"} (L{rserpool.codes.cause_name}).
        """
        return cause_name(self.cause)


@attrs.frozen
class IdentifierChanged:
    """
    The registrar refused the PE identifier as in use by another PE
    (Non-unique PE Identifier): the PE registers again with a fresh random
    one.  Someone may be squatting on the old one (RFC 5355 section 2.3).

    @ivar old: the refused identifier.
    @ivar new: the new one.
    """

    old: int
    new: int


@attrs.frozen
class RegistrarProblem:
    """
    A registrar could not be used this time; the hunt goes on with the
    next one (RFC 5352 section 3.6).  Reported for every failed attempt: an
    adapter that shows them to people tells each one once.

    @ivar endpoint: the registrar's endpoint description.
    @ivar what: C{"unreachable"} (the connection failed), C{"timeout"} (no
        connection within the connect timeout), C{"no answer"} (no
        response to a registration in time), C{"closed"} (the connection
        ended before the registration was answered: e.g. a TLS handshake
        the registrar refused) or C{"lost"} (the connection to the home
        registrar went away).
    @ivar reason: a short text from the transport, or C{""}.
    """

    endpoint: object
    what: str
    reason: str = ""


@attrs.frozen
class Deregistered:
    """
    The machine stopped; C{confirmed} tells whether a registrar answered
    the Deregistration.
    """

    confirmed: bool


@attrs.frozen
class HomeChanged:
    """
    A new home registrar: C{server_id} (learned from Endpoint Keep Alive).
    """

    server_id: int


def effective_transport(transport, local_addresses, loopback_peer=None):
    """
    The user transport to register over a connection to a registrar.

    A PE serving on the wildcard address registers the addresses it reaches
    the registrar from: a registrar accepts only addresses of the PE's own
    connection (RFC 5355 section 2.1), and those are the ones the PE's pool
    users can reach too.  Each unspecified address of C{transport} stands
    for the local addresses of its family: C{0.0.0.0} for IPv4 ones, C{::}
    for IPv6 ones (list both for a dual-stack socket).  Over TCP that is
    the connection's one local address; over SCTP every local address of
    the association (multi-homing, as RSPLIB's PEs register).  Loopback
    addresses stand in only when the registrar itself is on loopback: a
    registrar elsewhere must not hand them to pool users.  Addresses that
    are not unspecified are kept as they are (the user chose them).

    @param transport: a transport parameter, possibly with unspecified
        addresses.
    @param local_addresses: the L{ipaddress} addresses of this end of the
        connection (one, or several for SCTP), or C{None} / C{()} while
        unknown; a single address is accepted too.
    @param loopback_peer: whether the registrar is on loopback; by default
        whether the first local address is (a connection to loopback
        leaves from loopback).
    @return: a transport parameter.
    """
    if local_addresses is None:
        return transport
    if not isinstance(local_addresses, (tuple, list)):
        local_addresses = (local_addresses,)
    local_addresses = [a for a in local_addresses if a is not None]
    if not local_addresses:
        return transport
    if loopback_peer is None:
        loopback_peer = local_addresses[0].is_loopback
    usable = [a for a in local_addresses if loopback_peer or not a.is_loopback]
    out = []
    for a in transport.addresses:
        if a.is_unspecified:
            stand_ins = [b for b in usable if b.version == a.version]
        else:
            stand_ins = [a]
        for b in stand_ins:
            if b not in out:
                out.append(b)
    if not out:
        # Nothing of the listener's family reaches the registrar: register
        # what does, and let the registrar (and the log) say whether the
        # pool users can use it.
        out = usable[:1] or list(local_addresses[:1])
    if transport.protocol != "sctp":
        # TCP, UDP and DCCP transports carry exactly one address (RFC 5354
        # section 3): the primary one, e.g. of an SCTP registrar association.
        out = out[:1]
    return attrs.evolve(transport, addresses=tuple(out))


class PoolElementMachine(Hunting):
    """
    Keeps one pool element registered (RFC 5352 sections 3.1 to 3.7).

    @ivar state: one of L{IDLE}, L{HUNTING}, L{REGISTERING}, L{REGISTERED},
        L{DEREGISTERING}, L{STOPPED}, L{FAILED}; it moves only as
        L{PE_MOVES} says.
    @ivar home_id: the home registrar's server id, 0 while unknown.
    @ivar connection: the connection to the home registrar, or C{None}.
    @ivar endpoint: the description of the registrar connected to.
    @ivar hunt: the L{RegistrarHunt} (RFC 5352 section 3.6).
    """

    state = State(PE_MOVES, initial=IDLE)

    def __init__(self, config, user_transport, registrars=(), rng=None):
        """
        @param config: a L{PoolElementConfig}.
        @param user_transport: where pool users reach this PE (a transport
            parameter; unspecified addresses are replaced per connection by
            L{effective_transport}).
        @param registrars: client endpoint descriptions of the static
            registrars, in order of preference.
        @param rng: a C{random.Random} (for the PE identifier).
        """
        if config.identifier is None:
            if rng is None:
                raise ValueError("give either config.identifier or rng")
            config = attrs.evolve(config, identifier=new_identifier(rng))
        self.config = config
        self.user_transport = user_transport
        self.hunt = RegistrarHunt(registrars, config.connect_timeout)
        self.home_id = 0
        self.connection = None
        self.endpoint = None
        self._local = None
        #: connections registrars opened to us, not (yet) the home one:
        #: {connection: (local addresses, endpoint description)}
        self._incoming = {}
        self._out = []
        self._deadline = None
        self._deadline_kind = None
        self._ever_registered = False
        self._registered_here = False
        #: registrations a registrar accepted: the first at a registrar
        #: (after start or a hunt), and renewals (for metrics)
        self.registrations = 0
        self.reregistrations = 0
        self._rng = rng
        self._renewals = 0

    @property
    def identifier(self):
        """
        The PE identifier.
        """
        return self.config.identifier

    @property
    def pool_handle(self):
        """
        The pool handle.
        """
        return self.config.pool_handle

    # -- outputs ----------------------------------------------------------

    def actions(self):
        """
        The actions and events produced since the last call (and forget
        them).
        """
        out, self._out = self._out, []
        return out

    @property
    def next_deadline(self):
        """
        When L{timer} must be called (absolute seconds), or C{None}.
        """
        return self._deadline

    def _arm(self, when, kind):
        self._deadline = when
        self._deadline_kind = kind

    def _disarm(self):
        self._deadline = None
        self._deadline_kind = None

    # -- inputs -----------------------------------------------------------

    def start(self, now):
        """
        Begin: hunt for a registrar and register.
        """
        if self.state not in (IDLE, STOPPED, FAILED):
            return
        self.state = HUNTING
        self.hunt.new_round()
        self._ever_registered = False
        self._hunt(now)

    def registrar_announced(self, server_id, endpoint, now):
        """
        A registrar announced itself (RFC 5352 section 3.6).

        @param server_id: its id.
        @param endpoint: a client endpoint description to reach it.
        """
        self.hunt.announce(server_id, endpoint)
        if self.state == HUNTING and self.hunt.pending is None:
            # We were waiting for a registrar to appear.
            self.hunt.new_round()
            self._hunt(now)

    def connected(self, attempt, connection, local_address, now):
        """
        The connection of attempt C{attempt} is up.

        @param connection: the connection token (used in L{Send} and
            L{Close}).
        @param local_address: the L{ipaddress} address this end of the
            connection has, or all of them (a tuple; several for SCTP), or
            C{None}; see L{effective_transport}.
        @return: C{False} if the machine no longer wants this connection
            (the adapter must close it), else C{True}.
        """
        if self.state != HUNTING or not self.hunt.settle(attempt):
            return False
        self.connection = connection
        self._local = local_address
        # The round goes on: a registrar that accepts connections but
        # closes them before it answers (a TLS handshake it refuses, a
        # registrar that is not one) counts as tried, so the hunt waits
        # hunt_retry_delay after each round instead of reconnecting at once.
        self._registered_here = False
        self._register(now)
        return True

    def connect_failed(self, attempt, now, reason=""):
        """
        The connection attempt C{attempt} failed.

        @param reason: why, in a few words (for L{RegistrarProblem}).
        """
        if not self.hunt.settle(attempt):
            return
        self._out.append(RegistrarProblem(self.endpoint, "unreachable", str(reason)))
        self._next_registrar(now)

    def connection_lost(self, connection, now):
        """
        A connection is gone.  Losing the home registrar's starts a hunt
        (RFC 5352 section 3.6).
        """
        self._incoming.pop(connection, None)
        if connection is not self.connection:
            return
        self.connection = None
        if self.state == DEREGISTERING:
            self._stopped(False)
        elif self.state in (REGISTERING, REGISTERED):
            if self.state == REGISTERED:
                self._out.append(RegistrarProblem(self.endpoint, "lost"))
            else:
                self._out.append(RegistrarProblem(
                    self.endpoint, "closed",
                    "the connection closed before the registration was answered"))
            self.state = HUNTING
            self.home_id = 0
            self._disarm()
            self._next_registrar(now)

    def incoming_connection(self, connection, local_address, now, endpoint=None):
        """
        A registrar connected to us: a registrar that took this PE over
        (RFC 5353 takeover) reaches it at its ASAP transport, over SCTP the
        port the PE's registrar associations leave from.  Nothing happens
        until it sends an Endpoint Keep Alive with the H flag
        (L{message_received}); then this connection is the home
        registrar's.

        @param connection: the connection token.
        @param local_address: as for L{connected}: the local addresses of
            this connection, which the PE registers over it.
        @param endpoint: a client endpoint description of the registrar
            (its address and port as seen), named in later events; or
            C{None}.
        """
        self._incoming[connection] = (local_address, endpoint)

    def message_received(self, connection, message, now):
        """
        A decoded ASAP message arrived over C{connection}.
        """
        if isinstance(message, RegistrationResponse):
            self._registration_response(connection, message, now)
        elif isinstance(message, DeregistrationResponse):
            if (
                connection is self.connection
                and self.state == DEREGISTERING
                and message.identifier == self.identifier
            ):
                self._stopped(message.error is None)
        elif isinstance(message, EndpointKeepAlive):
            self._keep_alive(connection, message, now)
        elif isinstance(message, ASAPError):
            # An ASAP Error while our registration awaits its answer is the
            # answer: RSPLIB refuses a registration that way (e.g. cause
            # 0x0011 for addresses below its minimum scope) instead of with
            # a rejecting Registration Response.  Otherwise the adapter
            # only logs it.
            if (
                connection is self.connection
                and self.state in (REGISTERING, REGISTERED)
                and self._deadline_kind == "response"
            ):
                self._failed(message.error.causes, now)

    def timer(self, now):
        """
        Call at L{next_deadline}.
        """
        if self._deadline is None or now < self._deadline:
            return
        kind = self._deadline_kind
        self._disarm()
        if kind == "connect":
            cancel = self.hunt.cancel()
            if cancel is not None:
                self._out.append(cancel)
            self._out.append(RegistrarProblem(
                self.endpoint, "timeout", "no connection within %g s" % self.config.connect_timeout))
            self._next_registrar(now)
        elif kind == "hunt":
            self.hunt.new_round()
            self._hunt(now)
        elif kind == "response":
            # The registrar did not answer in time: it counts as failed.
            if self.state == DEREGISTERING:
                self._stopped(False)
                return
            self._out.append(RegistrarProblem(
                self.endpoint, "no answer",
                "no answer to the registration within %g s" % self.config.response_timeout))
            self._drop_connection()
            self.state = HUNTING
            self._next_registrar(now)
        elif kind == "reregister":
            self._register(now)

    def set_policy(self, policy, now):
        """
        Change the policy (typically its load): re-register at once when
        registered (RFC 5352 section 3.1: a re-registration updates the
        PE's parameters).
        """
        self.config = attrs.evolve(self.config, policy=policy)
        if self.state == REGISTERED and self.connection is not None:
            self._register(now)

    def stop(self, now):
        """
        Deregister (RFC 5352 section 3.3) and stop.
        """
        if self.state in (STOPPED, IDLE, FAILED):
            self.state = STOPPED
            self._out.append(Deregistered(False))
            return
        if self.state == DEREGISTERING:
            return
        if self.connection is not None and self._registered_here:
            self.state = DEREGISTERING
            self._out.append(
                Send(self.connection, Deregistration(self.pool_handle, self.identifier))
            )
            self._arm(now + self.config.response_timeout, "response")
            return
        cancel = self.hunt.cancel()
        if cancel is not None:
            self._out.append(cancel)
        self._stopped(False)

    # -- procedures -------------------------------------------------------

    def _stopped(self, confirmed):
        self._drop_connection()
        self._disarm()
        self.state = STOPPED
        self._out.append(Deregistered(confirmed))

    def _drop_connection(self):
        if self.connection is not None:
            self._out.append(Close(self.connection))
            self.connection = None
        self.home_id = 0

    def _hunt(self, now):
        # RFC 5352 section 3.6: try the known registrars one after the
        # other; after a round without success, wait and begin another.
        if self.hunt.round_done:
            self.hunt.new_round()
            self._arm(now + self.config.hunt_retry_delay, "hunt")
            return
        connect = self.hunt.dial(now)
        self.endpoint = connect.endpoint
        self._out.append(connect)
        self._arm(self.hunt.deadline, "connect")

    def _next_registrar(self, now):
        self.hunt.next()
        self.state = HUNTING
        self._disarm()
        self._hunt(now)

    def registration(self):
        """
        The L{Registration} this PE sends now.
        """
        config = self.config
        transport = effective_transport(self.user_transport, self._local)
        return Registration(
            config.pool_handle,
            PoolElement(
                config.identifier,
                self.home_id,
                config.life_ms,
                transport,
                config.policy,
            ),
        )

    def _register(self, now):
        if self.state != REGISTERED:
            self.state = REGISTERING
        self._out.append(Send(self.connection, self.registration()))
        self._arm(now + self.config.response_timeout, "response")

    def _registration_response(self, connection, message, now):
        if connection is not self.connection or message.identifier != self.identifier:
            return
        if self.state not in (REGISTERING, REGISTERED):
            return
        if message.reject:
            self._failed(message.error.causes if message.error is not None else (), now)
            return
        again = self._ever_registered
        first_here = not self._registered_here
        self.hunt.new_round()
        self._renewals = 0
        self._ever_registered = True
        self._registered_here = True
        self.state = REGISTERED
        self._arm(now + self.config.reregistration_interval, "reregister")
        if first_here or not again:
            self.registrations += 1
        else:
            self.reregistrations += 1
        if first_here or not again:
            self._out.append(Registered(self.endpoint, again))

    def _failed(self, causes, now):
        # RFC 5352 section 3.1: the registration is refused; give up (the
        # cause is the user's to act on, another registrar would say the
        # same) -- except for an identifier in use, which we chose at
        # random and may choose again (a bounded number of times in a row).
        cause = causes[0].code if causes else 0
        if (
            cause == ErrorCause.NON_UNIQUE_PE_IDENTIFIER
            and not self.config.identifier_fixed
            and self._rng is not None
            and self._renewals < MAX_IDENTIFIER_RENEWALS
            and self.state == REGISTERING
        ):
            self._renewals += 1
            old = self.config.identifier
            new = old
            while new == old:
                new = new_identifier(self._rng)
            self.config = attrs.evolve(self.config, identifier=new)
            self._out.append(IdentifierChanged(old, new))
            self._register(now)
            return
        refused = self.registration().pool_element
        local = self._local if isinstance(self._local, tuple) else (self._local,)
        self._drop_connection()
        self._disarm()
        self.state = FAILED
        self._out.append(RegistrationFailed(
            cause, tuple(causes), self.endpoint, refused,
            tuple(a for a in local if a is not None)))

    def _keep_alive(self, connection, message, now):
        # RFC 5352 section 3.4 (Endpoint Keep Alive): answer the home
        # registrar's audit.  RSPLIB puts our identifier into the Keep
        # Alive; without one it means every PE of ours in that pool.
        if message.pool_handle != self.pool_handle:
            return
        if message.identifier is not None and message.identifier != self.identifier:
            return
        if connection is not self.connection:
            if not message.home or self.state in (IDLE, DEREGISTERING, STOPPED, FAILED):
                # Only a registrar that takes us over may speak from
                # elsewhere, and it says so with the H flag.
                return
            # RFC 5352 section 3.4, the H flag ("I am your new home PR",
            # RFC 5354 section 2.2.7), sent after an RFC 5353 takeover:
            # the PE MUST answer the sender over its connection and SHOULD
            # take it for its home registrar, so its next Registration
            # goes there (at the re-registration timer, as any renewal:
            # a registrar adopting many PEs is not flooded at once).  Any
            # hunt or old home connection is dropped.
            cancel = self.hunt.cancel()
            if cancel is not None:
                self._out.append(cancel)
            self._drop_connection()
            local, endpoint = self._incoming.pop(connection, (self._local, None))
            self.connection = connection
            self.endpoint = endpoint
            self._local = local
            self.hunt.new_round()
            self.state = REGISTERED
            self._registered_here = True
            self._arm(now + self.config.reregistration_interval, "reregister")
        if message.server_id != self.home_id and (message.home or self.home_id == 0):
            self.home_id = message.server_id
            self._out.append(HomeChanged(message.server_id))
        self._out.append(
            Send(connection, EndpointKeepAliveAck(self.pool_handle, self.identifier))
        )

