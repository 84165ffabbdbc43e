"""
A registrar as a Twisted service: a L{MultiService} of small services,
each with one job, around the sans-IO machines
(L{rserpool.asap.registrar.ASAPRegistrar} and L{rserpool.enrp.ENRPServer}),
whose events go in through the receivers and whose actions
(L{rserpool.actions}) one L{rserpool.actions.Runner} carries out:

  - L{ListenerService}: the ASAP and ENRP listeners (and the HTTP side);
    the others begin once it listens;
  - L{PeeringService}: dialling ENRP peers, Presence multicast;
  - L{AnnounceService}: ASAP Server Announce;
  - L{KeyReloadService}: TLS-PSK keys read again (SIGHUP);
  - L{PEReachService}: associations to PEs adopted in a takeover.

This service itself keeps what they share: the machines, their timers,
the connection budget and the turns of every listener, the refusal log
and the monitor (counters, HTTP, CSP).

Listeners are Twisted endpoint strings (C{tcp:3863:interface=127.0.0.1},
C{sctp:...}, C{psk:...}), parsed with
L{twisted.internet.endpoints.serverFromString}: the state machines never
know which mapping they run on.
"""
import random

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from rserpool.actions import Runner
from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig
from rserpool.asap.scope import Scope, listening_scope
from rserpool.enrp import ENRPConfig, ENRPServer
from rserpool.enrp.trust import PeerPolicy, endpoint_addresses
from rserpool.limits import RefusalLog
from rserpool.services.announcing import AnnounceService, announced_transports
from rserpool.transport.hosts import host_addresses, host_networks, strerror
from rserpool.services.keys import KeyReloadService
from rserpool.services.listeners import ListenerService, ListenFailed
from rserpool.services.peering import PeeringService, peer_endpoint, server_information
from rserpool.services.reach import PEReachService
from rserpool.services.security import check_enrp_keys
from rserpool.transport.guard import ConnectionBudget, ConnectionLimits, TurnScheduler
from rserpool.transport.tcp import MessageStreamFactory, address_of
from rserpool.web.monitor import RegistrarMonitor
from rserpool.wire import ENRP

__all__ = ["RegistrarService", "Wakeup", "new_server_id", "make_config"]


class Wakeup:
    """
    One reactor timer for a sans-IO state machine that asks to be woken at
    absolute times (its L{rserpool.actions.Schedule} actions, which a
    L{Runner} hands to C{schedule(when)}): the earliest request is kept,
    and the callback gets the current time.
    """

    def __init__(self, clock, callback=None):
        """
        @param clock: an L{IReactorTime}.
        @param callback: called with C{clock.seconds()} when a requested time
            is reached.
        """
        self.clock = clock
        self.callback = callback
        self._call = None
        self.stopped = False

    def schedule(self, when):
        """
        Wake up at C{when} (seconds) or earlier; ignored once stopped.
        """
        if self.stopped:
            return
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= when:
                return
            call.cancel()
        self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def cancel(self):
        """
        Forget the pending wake-up and ignore further requests.
        """
        self.stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self):
        self._call = None
        self.callback(self.clock.seconds())


class RegistrarService(service.MultiService):
    """
    A registrar: listens for ASAP on each endpoint, keeps the registrar's
    timer, and optionally announces itself and answers ENRP.

    @ivar registrar: the L{ASAPRegistrar}.
    @ivar enrp: the L{ENRPServer}, or C{None} without ENRP.
    @ivar listeners: the L{ListenerService}.
    @ivar peering: the L{PeeringService}, or C{None} without ENRP.
    @ivar announcer: the L{AnnounceService}, or C{None}.
    @ivar keys: the L{KeyReloadService}.
    @ivar reach: the L{PEReachService}.
    @ivar ready: a L{Deferred} that fires with the list of listening ports
        once every endpoint listens, or fails with L{ListenFailed}.
    """

    log = Logger()

    def __init__(
        self,
        config,
        asap_endpoints=("tcp:3863:interface=127.0.0.1",),
        enrp_endpoint=None,
        peers=(),
        announce=None,
        min_address_scope=None,
        max_elements_per_ht_request=128,
        enrp_config=None,
        enrp_multicast=None,
        reactor=None,
        rng=None,
        exit_on_listen_failure=False,
        enrp_multicast_ttl=30,
        enrp_multicast_interface=None,
        psk=None,
        secured=False,
        reload_on_sighup=False,
        connection_limits=None,
        peer_networks=None,
        public_dump=False,
        http=None,
        http_limits=None,
        metrics_cache=1.0,
        csp=None,
        csp_interval=0.25,
    ):
        """
        @param config: a L{RegistrarConfig}; its C{min_address_scope} is
            replaced by the listeners' scope unless C{min_address_scope} is
            given.
        @param asap_endpoints: server endpoint strings for ASAP.
        @param enrp_endpoint: a server endpoint string for ENRP, or C{None}
            for no ENRP at all.
        @param peers: static ENRP peers: client endpoint strings
            (C{tcp:HOST:9901}, C{sctp:host=H:port=9901:ppid=12}) or
            C{HOST:PORT}.
        @param max_elements_per_ht_request: PEs per Handle Table Response
            (used when C{enrp_config} is not given).
        @param enrp_config: an L{ENRPConfig}.
        @param enrp_multicast: C{(group, port)} to send and hear ENRP
            Presence on, or C{None} (off, the default).
        @param enrp_multicast_ttl: the multicast TTL of ENRP Presence.
        @param enrp_multicast_interface: the address of the interface to
            send and hear ENRP Presence on, or C{None} for the system's
            choice.
        @param announce: L{rserpool.services.announcing.AnnounceSettings},
            or C{None} to stay silent.
        @param min_address_scope: a L{Scope} to enforce, or C{None} for the
            narrowest scope of the ASAP listeners' own addresses.
        @param reactor: the reactor (the global one by default).
        @param rng: a C{random.Random}.
        @param exit_on_listen_failure: raise C{SystemExit} with a one-line
            message if an endpoint cannot listen (for C{twistd}, which would
            otherwise print a traceback).
        @param psk: a L{rserpool.transport.psk.PSKEndpoints} to secure every
            ASAP and ENRP listener and every ENRP peer connection with
            TLS-PSK (RFC 5355), or C{None}.  Secured, the registrar neither
            listens on nor dials anything else: no registration or peer
            update reaches it unauthenticated.
        @param secured: whether every endpoint is secured (C{psk:}, C{ssl:},
            C{tls:}) without C{psk}: peers learned from List Responses and
            ENRP Presence, whose addresses come without TLS settings, are
            then not dialed (RFC 5355 section 2.15.3).
        @param reload_on_sighup: when a listener is TLS-PSK, call
            L{reload_keys} on SIGHUP while the service runs (for C{twistd}).
        @param peer_networks: networks (L{ipaddress} networks or strings)
            whose registrars may become ENRP peers without being static
            peers or named by one (C{--enrp-peer-networks}; RFC 5355
            section 2.5, doc/enrp.rst "Who is a peer"); C{None}, the
            default, for the networks this host's interfaces are on
            (L{host_networks}: a cluster on one LAN peers with
            C{--peer} given on one side only), C{()} for none.
        @param public_dump: answer ENRP List and Handle Table Requests from
            anyone, not only from peers and this host.
        @raise rserpool.services.security.InsecureConfiguration: (a
            C{ValueError}) C{psk} without a key file of its own for ENRP
            while ENRP is on: a pool user's key must never open ENRP.
        @param connection_limits: the L{ConnectionLimits} of every accepted
            ASAP and ENRP connection and of the listeners together
            (deadlines, write buffer, connections per source); the
            defaults of L{ConnectionLimits} unless given.
        @param http: a server endpoint string for the HTTP listener
            (metrics, the handlespace page, health checks:
            L{rserpool.web.monitor}), or C{None} (off, the default).
        @param http_limits: its L{rserpool.web.http.HTTPLimits}.
        @param metrics_cache: seconds a rendered C{/metrics} is reused.
        @param csp: C{(host, port)} of RSPLIB's C{cspmonitor} to report to
            (Component Status Protocol, L{rserpool.transport.csp_reporter}), or
            C{None}.
        @param csp_interval: seconds between those reports.
        """
        service.MultiService.__init__(self)
        check_enrp_keys(enrp_endpoint, psk)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.rng = rng if rng is not None else random.Random()
        self.asap_endpoints = list(asap_endpoints)
        self.enrp_endpoint = enrp_endpoint
        self.peers = list(peers)
        self.announce = announce
        self.psk = psk
        self.secured = secured or psk is not None
        self.http = http
        self.csp = csp
        self.csp_interval = csp_interval
        self.fixed_scope = min_address_scope
        self.peer_networks = peer_networks
        self.public_dump = public_dump
        if min_address_scope is not None:
            config = attrs.evolve(config, min_address_scope=min_address_scope)
        if enrp_config is None:
            enrp_config = ENRPConfig(max_elements_per_ht_request=max_elements_per_ht_request)
        self.enrp_config = enrp_config
        self.connection_limits = connection_limits if connection_limits is not None \
            else ConnectionLimits()
        #: the connections of every listener, counted together
        self.connection_budget = ConnectionBudget(self.connection_limits)
        #: the registrar's time shared out by source, over all listeners
        self.turns = TurnScheduler(self.reactor)
        self.refusals = RefusalLog()

        # The machines, their timers and the runner of their actions.
        #: carries out what the machines return
        self.run = Runner()
        self.registrar = ASAPRegistrar(config, rng=self.rng)
        self.wakeup = Wakeup(reactor, lambda now: self.run(self.registrar.timer_fired(now)))
        self.run.timers[self.registrar] = self.wakeup
        #: counters, recent events and the HTTP side (rserpool.web.monitor)
        self.monitor = RegistrarMonitor(self, reactor, limits=http_limits,
                                        metrics_cache=metrics_cache)

        # The services, in the order they start: the listeners first.
        self.listeners = ListenerService(reactor, psk=psk,
                                         exit_on_listen_failure=exit_on_listen_failure)
        self.listeners.setServiceParent(self)
        self._asap_factory = MessageStreamFactory(
            self.monitor.asap_receiver(self.registrar, reactor, self.run), "asap",
            limits=self.connection_limits, clock=reactor, budget=self.connection_budget,
            refusals=self.refusals, turns=self.turns)
        for description in self.asap_endpoints:
            self.listeners.add(description, self._asap_factory, "ASAP")
        self.listeners.also(self._start_monitor)
        self.listeners.hook(self._listening, self._listen_failed)
        self.reach = PEReachService(reactor, self.registrar, self.listeners,
                                    self._asap_factory, secured=self.secured)
        self.reach.setServiceParent(self)
        self.enrp = None
        self.peering = None
        self._enrp_wakeup = None
        if enrp_endpoint:
            self._build_enrp(enrp_config, enrp_multicast, enrp_multicast_ttl,
                             enrp_multicast_interface)
        self.announcer = None
        if announce is not None:
            self.announcer = AnnounceService(self.listeners, reactor, self.registrar.server_id,
                                             announce, rng=self.rng, secured=psk is not None)
            self.announcer.setServiceParent(self)
        self.keys = KeyReloadService(self.listeners, reactor, on_sighup=reload_on_sighup)
        self.keys.setServiceParent(self)

    def _build_enrp(self, enrp_config, multicast, ttl, interface):
        """
        The ENRP machine, its listener and the peering service.
        """
        self.enrp = ENRPServer(self.registrar, enrp_config, information=self.server_information,
                               rng=self.rng, reach_pe=self.reach.reach_pe,
                               policy=self.peer_policy())
        self._enrp_wakeup = Wakeup(self.reactor, lambda now: self.run(self.enrp.timer_fired(now)))
        self.run.timers[self.enrp] = self._enrp_wakeup
        factory = MessageStreamFactory(
            self.monitor.enrp_receiver(self.enrp, self.reactor, run=self.run), ENRP,
            limits=self.connection_limits, clock=self.reactor, budget=self.connection_budget,
            reserved=True, refusals=self.refusals, turns=self.turns)
        self.listeners.add(self.enrp_endpoint, factory, "ENRP")
        self.peering = PeeringService(
            self.listeners, self.reactor, self.enrp, self.run,
            lambda: self.monitor.enrp_receiver(self.enrp, self.reactor, outgoing=True,
                                               run=self.run),
            peers=self.peers, psk=self.psk, secured=self.secured, multicast=multicast,
            multicast_ttl=ttl, multicast_interface=interface)
        self.peering.setServiceParent(self)

    def peer_policy(self):
        """
        The L{PeerPolicy} of this registrar's ENRP server: the static
        peers' literal addresses, the accepted networks, this host's
        addresses (a dump from them is answered) and whether every ENRP
        connection is TLS-PSK with the registrars' keys.
        """
        static = set()
        for description in self.peers:
            static |= endpoint_addresses(peer_endpoint(description))
        networks = self.peer_networks
        if networks is None:
            networks = host_networks()
        return PeerPolicy(static=static, networks=tuple(networks),
                          local=host_addresses(), public_dump=self.public_dump,
                          authenticated=self.psk is not None)

    # -- what the services share -------------------------------------------

    @property
    def ready(self):
        return self.listeners.ready

    @property
    def ports(self):
        return self.listeners.ports

    @property
    def asap_ports(self):
        return self.listeners.ports_of.get("ASAP", [])

    @property
    def enrp_ports(self):
        return self.listeners.ports_of.get("ENRP", [])

    @property
    def exit_on_listen_failure(self):
        return self.listeners.exit_on_listen_failure

    @exit_on_listen_failure.setter
    def exit_on_listen_failure(self, value):
        self.listeners.exit_on_listen_failure = value

    @property
    def psk_creators(self):
        """
        The TLS-PSK context creators of the listeners.
        """
        return self.listeners.psk_creators

    def reload_keys(self):
        """
        Read the TLS-PSK key files of the listeners again (C{twistd enrp}
        does it on SIGHUP): L{KeyReloadService.reload_keys}.

        @return: the number of connections closed.
        """
        return self.keys.reload_keys()

    def announced_transports(self):
        """
        The transport parameters of the ASAP listeners, as Server Announce
        names them (L{rserpool.services.announcing.announced_transports}).
        """
        interface = self.announce.interface if self.announce is not None else None
        return announced_transports(self.asap_ports, interface)

    def server_information(self):
        """
        This registrar's ENRP L{ServerInformation}: its id and where its
        ENRP endpoint listens.
        """
        return server_information(self.registrar.server_id, self.enrp_ports)

    # -- service ----------------------------------------------------------

    def _start_monitor(self):
        def failed(f):
            reason = f.value
            if isinstance(reason, CannotListenError):
                reason = reason.socketError
            raise ListenFailed("cannot listen for HTTP on {!r}: {}".format(
                self.http, strerror(reason)))

        d = self.monitor.start(self.http).addErrback(failed)
        if self.csp is not None:
            self.monitor.start_csp(self.csp, self.csp_interval)
        return d

    def startService(self):
        self.wakeup.stopped = False
        if self._enrp_wakeup is not None:
            self._enrp_wakeup.stopped = False
        self.log.info("registrar {id:08x} starting", id=self.registrar.server_id)
        if self.enrp is not None:
            networks = self.enrp.policy.networks
            self.log.info(
                "ENRP admits as peers its --peer registrars, those they name{networks}",
                networks=" and registrars in " + ", ".join(str(n) for n in networks)
                if networks else " (no other network: --enrp-peer-networks)")
        service.MultiService.startService(self)

    def _listening(self, ports):
        if self.fixed_scope is None:
            scopes = [listening_scope(address_of(port.getHost())[0]) for port in self.asap_ports]
            if scopes:
                self.registrar.config = attrs.evolve(self.registrar.config,
                                                     min_address_scope=min(scopes))
        self.log.info(
            "registrar {id:08x} ready; accepting PE addresses of scope {scope} and wider",
            id=self.registrar.server_id,
            scope=Scope(self.registrar.config.min_address_scope).name.lower().replace("_", "-"),
        )
        return ports

    def _listen_failed(self, failure):
        self.monitor.stop()
        return failure

    def stopService(self):
        stopped = service.MultiService.stopService(self)
        for conn in list(self.registrar.connections):
            conn.close()
        if self._enrp_wakeup is not None:
            self._enrp_wakeup.cancel()
        self.wakeup.cancel()
        return defer.gatherResults([stopped, self.monitor.stop()])


def new_server_id(rng):
    """
    A random, non-zero 32-bit registrar id (RFC 5353 section 3.2.1).
    """
    while True:
        value = rng.getrandbits(32)
        if value:
            return value


def make_config(server_id=None, rng=None, **settings):
    """
    A L{RegistrarConfig} with a random id unless one is given.
    """
    if server_id is None:
        server_id = new_server_id(rng if rng is not None else random.SystemRandom())
    return RegistrarConfig(server_id=server_id, **settings)
