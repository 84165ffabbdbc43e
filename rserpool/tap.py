"""
C{twistd enrp}: command line options and L{makeService} for a registrar.

Every option can also come from C{--config FILE}, a TOML file (top level or
an C{[enrp]} table) or an INI file (an C{[enrp]} section), with the same
names (C{keep-alive-interval = 5} or C{keep_alive_interval = 5}).  The
command line wins over the file, the file over the defaults.  Defaults
follow RSPLIB's registrar; times are in seconds.
"""
import configparser
import random

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

from twisted.python import usage

from rserpool.asap.registrar import HR_ITEMS_LIMIT, MAX_STRETCHED_INTERVAL, RegistrarConfig
from rserpool.asap.sources import SourceSettings
from rserpool.asap.scope import parse_scope
from rserpool.codes import ASAP_ANNOUNCE_GROUP, ENRP_ANNOUNCE_GROUP
from rserpool.enrp import ENRPConfig
from rserpool.enrp.trust import parse_networks
from rserpool.services import AnnounceSettings, RegistrarService, new_server_id
from rserpool.services.collector import CollectorService
from rserpool.services.security import InsecureConfiguration, check_security
from rserpool.transport.guard import ConnectionLimits
from rserpool.transport.multicast import parse_group
from rserpool.transport.psk import is_secure

__all__ = ["Options", "makeService", "DEFAULTS"]

#: Default ASAP endpoint: localhost only, so a default run serves nothing
#: off the host.
DEFAULT_ASAP = "tcp:3863:interface=127.0.0.1"

#: Default ENRP endpoint: localhost only, so that ``rserpool dump`` works
#: against a default registrar and nothing is served off the host.
DEFAULT_ENRP = "tcp:9901:interface=127.0.0.1"


def _seconds(name, low, high):
    def convert(value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise usage.UsageError("--{} takes seconds, not {!r}".format(name, value)) from None
        if not low <= value <= high:
            raise usage.UsageError("--{} must be between {} and {} seconds".format(name, low, high))
        return value

    return convert


def _integer(name, low, high=None):
    def convert(value):
        try:
            value = int(str(value), 0)
        except (TypeError, ValueError):
            raise usage.UsageError("--{} takes an integer, not {!r}".format(name, value)) from None
        if value < low or (high is not None and value > high):
            raise usage.UsageError(
                "--{} must be between {} and {}".format(name, low, high if high is not None else "any")
            )
        return value

    return convert


def _server_id(value):
    if value in (None, ""):
        return None
    try:
        number = int(str(value), 16) if str(value).lower().startswith("0x") or any(
            c in "abcdefABCDEF" for c in str(value)
        ) else int(str(value))
    except ValueError:
        raise usage.UsageError("--id takes a 32-bit number (decimal or 0x hex), not {!r}".format(value)) from None
    if not 1 <= number <= 0xFFFFFFFF:
        raise usage.UsageError("--id must be a non-zero 32-bit number")
    return number


def _rate(name):
    def convert(value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise usage.UsageError(
                "--{} takes requests per second, not {!r}".format(name, value)
            ) from None
        if not value >= 0 or value == float("inf"):
            raise usage.UsageError("--{} must be 0 (no limit) or a positive rate".format(name))
        return value

    return convert


def _scope(value):
    try:
        return parse_scope(str(value))
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def _group(value):
    try:
        return parse_group(str(value))
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def _networks(value):
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if str(value).strip().lower() in ("none", "off", ""):
        return ()
    try:
        return parse_networks(str(value))
    except ValueError as e:
        raise usage.UsageError("--enrp-peer-networks: {}".format(e)) from None


def _csp(value):
    from rserpool.transport.csp_reporter import parse_csp_address

    try:
        return parse_csp_address(value)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def _flag(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise usage.UsageError("expected yes or no, not {!r}".format(value))


#: name: (default, converter, help).  Times in seconds.
SETTINGS = {
    "id": (None, _server_id, "This registrar's id, 32 bits, decimal or 0x hex [random]."),
    "keep-alive-interval": (
        5.0, _seconds("keep-alive-interval", 0.1, 300.0),
        "Seconds between Endpoint Keep Alives to each PE this registrar is home for.",
    ),
    "max-keep-alive-rate": (
        5000.0, _rate("max-keep-alive-rate"),
        "Endpoint Keep Alives a second to all PEs together; with more PEs than that many "
        "per interval, the interval grows (to 60 s at most) (0: no limit).",
    ),
    "keep-alive-timeout": (
        5.0, _seconds("keep-alive-timeout", 0.1, 60.0),
        "Seconds to wait for an Endpoint Keep Alive Ack before removing the PE.",
    ),
    "max-bad-pe-reports": (
        3, _integer("max-bad-pe-reports", 1),
        "Endpoint Unreachable reports that remove a PE (MAX-BAD-PE-REPORT).",
    ),
    "max-hr-items": (
        3, _integer("max-hr-items", 1, HR_ITEMS_LIMIT),
        "PEs per Handle Resolution Response when the PU does not ask for a number.",
    ),
    "max-hr-items-cap": (
        HR_ITEMS_LIMIT, _integer("max-hr-items-cap", 1, HR_ITEMS_LIMIT),
        "The most PEs per Handle Resolution Response, whatever the PU asks for.",
    ),
    "max-increment": (
        0, _integer("max-increment", 0),
        "Selected PEs a handle resolution counts as used (0: the policy's default).",
    ),
    "max-pool-elements": (
        100000, _integer("max-pool-elements", 0),
        "PEs this registrar may be home for; registrations of new PEs beyond it are "
        "refused with Lack of Resources (0: no limit).",
    ),
    "max-hr-rate": (
        0.0, _rate("max-hr-rate"),
        "Handle resolutions per second one pool user may ask for one pool handle; "
        "beyond it they are answered Unknown Pool Handle (0: no limit).",
    ),
    "max-eu-rate": (
        0.0, _rate("max-eu-rate"),
        "Endpoint Unreachable messages per second one pool user may send for one "
        "pool handle; beyond it they are ignored (0: no limit).",
    ),
    "min-address-scope": (
        None, _scope,
        "Narrowest PE address scope accepted: loopback, site-local or global "
        "[the scope of the ASAP endpoint's own address; site-local for a wildcard].",
    ),
    "announce": (False, _flag, None),
    "quiet": (False, _flag, None),
    "announce-group": (
        ASAP_ANNOUNCE_GROUP, _group, "Server Announce group ADDRESS:PORT.",
    ),
    "announce-interval": (
        1.0, _seconds("announce-interval", 0.1, 60.0), "Seconds between Server Announces.",
    ),
    "announce-ttl": (30, _integer("announce-ttl", 1, 255), "Multicast TTL of Server Announces."),
    "announce-interface": (
        None, str, "Address of the interface to send Server Announces from [system's choice].",
    ),
    "enrp": (
        DEFAULT_ENRP, str,
        "ENRP endpoint to listen on for peers and `rserpool dump`; 'none' for no ENRP.",
    ),
    "enrp-multicast": (False, _flag, None),
    "csp": (
        None, _csp,
        "Report this registrar's status to RSPLIB's cspmonitor (Component Status "
        "Protocol, UDP) at HOST[:PORT] (port 2960 unless given) [off].",
    ),
    "csp-interval": (
        0.25, _seconds("csp-interval", 0.05, 60.0),
        "Seconds between Component Status reports (RSPLIB's -cspinterval).",
    ),
    "http": (
        None, str,
        "Serve Prometheus metrics (/metrics), the handlespace page (/), JSON (/api/v1/) and "
        "health checks (/healthz, /readyz) over HTTP on this server endpoint, e.g. "
        "tcp:8080:interface=127.0.0.1 (psk: and ssl: too) [off].",
    ),
    "enrp-peer-networks": (
        None, _networks,
        "Networks whose registrars may become ENRP peers without being a --peer or "
        "named by one (over a connection or multicast Presence), e.g. "
        "192.0.2.0/24,2001:db8::/64, or 'none' [the networks of this host's "
        "interfaces, loopback excepted].",
    ),
    "enrp-public-dump": (False, _flag, None),
    "enrp-multicast-group": (
        ENRP_ANNOUNCE_GROUP, _group, "ENRP Presence multicast group ADDRESS:PORT.",
    ),
    "enrp-multicast-ttl": (
        30, _integer("enrp-multicast-ttl", 1, 255), "Multicast TTL of ENRP Presence.",
    ),
    "enrp-multicast-interface": (
        None, str,
        "Address of the interface to send and hear ENRP Presence on [system's choice].",
    ),
    # RFC 5353 timers and limits, RSPLIB's defaults.
    "peer-heartbeat-cycle": (
        2.444, _seconds("peer-heartbeat-cycle", 0.05, 300.0),
        "Seconds between ENRP Presence messages to peers (PEER-HEARTBEAT-CYCLE).",
    ),
    "peer-max-time-last-heard": (
        5.0, _seconds("peer-max-time-last-heard", 0.05, 300.0),
        "Seconds of peer silence before probing it (MAX-TIME-LAST-HEARD).",
    ),
    "peer-max-time-no-response": (
        5.0, _seconds("peer-max-time-no-response", 0.05, 60.0),
        "Seconds to wait for a probed peer (MAX-TIME-NO-RESPONSE).",
    ),
    "mentor-discovery-timeout": (
        5.0, _seconds("mentor-discovery-timeout", 0.05, 60.0),
        "Seconds to look for a mentor peer at startup.",
    ),
    "takeover-expiry": (
        5.0, _seconds("takeover-expiry", 0.05, 60.0),
        "Seconds a takeover waits for its acknowledgements.",
    ),
    "psk-keys": (
        None, str,
        "Secure every ASAP and ENRP listener and every ENRP peer connection with "
        "TLS-PSK (RFC 5355), with the keys of this file (IDENTITY HEXKEY lines); "
        "tcp: endpoints become psk: ones.",
    ),
    "psk-peer-keys": (
        None, str,
        "With --psk-keys, the registrars' own key file for the ENRP listener and peers "
        "(required with ENRP on), so that PEs and PUs cannot act as registrars.",
    ),
    "psk-identity": (
        None, str,
        "With --psk-keys, the identity this registrar presents to its ENRP peers "
        "[the peers' key file's only identity].",
    ),
    "max-elements-per-ht-request": (
        128, _integer("max-elements-per-ht-request", 1, 65535),
        "PEs per ENRP Handle Table Response.",
    ),
    # Limits per source (its TLS-PSK identity, else its address; an IPv6
    # /64), RFC 5355 sections 2.1, 2.2, 2.13 and 3 (doc/security.rst).  0
    # switches one off.
    "max-pes-per-source": (
        10000, _integer("max-pes-per-source", 0),
        "PEs one source may hold registered (0: no limit).",
    ),
    "max-pools-per-source": (
        1000, _integer("max-pools-per-source", 0),
        "Pools one source may create (0: no limit).",
    ),
    "max-hr-rate-per-source": (
        2000.0, _rate("max-hr-rate-per-source"),
        "Handle resolutions per second one source may ask for (0: no limit).",
    ),
    "max-eu-rate-per-source": (
        10.0, _rate("max-eu-rate-per-source"),
        "Endpoint Unreachable reports per second one source may send (0: no limit).",
    ),
    "unreachable-report-window": (
        60.0, _seconds("unreachable-report-window", 1.0, 86400.0),
        "Seconds an Endpoint Unreachable report counts towards --max-bad-pe-reports "
        "(one per source).",
    ),
    "ipv6-source-prefix": (
        64, _integer("ipv6-source-prefix", 1, 128),
        "Leading bits of an IPv6 address that make one source.",
    ),
    # Every accepted connection (rserpool.transport.guard).
    "message-timeout": (
        10.0, _seconds("message-timeout", 0.1, 3600.0),
        "Seconds a new connection has for its first whole message, and a begun "
        "message has to complete.",
    ),
    "idle-timeout": (
        600.0, _seconds("idle-timeout", 1.0, 86400.0),
        "Seconds a connection may send nothing before it is closed.",
    ),
    "max-output-buffer": (
        1 << 20, _integer("max-output-buffer", 4096),
        "Bytes queued for a peer that does not read before its connection is aborted.",
    ),
    "gc-sweep-interval": (
        0.0, _seconds("gc-sweep-interval", 0.0, 86400.0),
        "Experimental: seconds between two full passes of the garbage collector over every "
        "object, what survived a full pass being frozen out of the next ones in between "
        "(0, the default: CPython's schedule, with a young threshold of 50,000).",
    ),
    "stall-timeout": (
        60.0, _seconds("stall-timeout", 1.0, 86400.0),
        "Seconds a peer may read nothing of what is sent to it before its connection is "
        "aborted.",
    ),
    "max-connections-per-source": (
        1024, _integer("max-connections-per-source", 0),
        "Connections one source may hold open (0: no limit).",
    ),
    "max-connections": (
        0, _integer("max-connections", 0),
        "Connections held open in all; 32 of them only for ENRP peers (0: the open-file "
        "limit, raised to its hard limit, less 64).",
    ),
}

#: Every setting's default.
DEFAULTS = {name: spec[0] for name, spec in SETTINGS.items()}
DEFAULTS["asap"] = [DEFAULT_ASAP]
DEFAULTS["peer"] = []


def _default_text(name):
    default = DEFAULTS[name]
    if default is None:
        return None
    if isinstance(default, tuple):
        return "%s:%d" % default
    return default


class Options(usage.Options):
    """
    The options of C{twistd enrp}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run an RSerPool registrar (ENRP server, RFC 5352/5353) serving ASAP "
        "over the TCP mapping and peering with other registrars over ENRP. "
        "With no options it listens for ASAP on tcp:3863:interface=127.0.0.1 "
        "and for ENRP on tcp:9901:interface=127.0.0.1, and accepts loopback PEs."
    )

    optFlags = [
        ["announce", None, "Send ASAP Server Announce to the announce group (off by default)."],
        ["enrp-multicast", None, "Send and hear ENRP Presence on the multicast group (off by default)."],
        ["enrp-public-dump", None,
         "Show the handlespace (ENRP Handle Table and List Requests) to anyone who asks, "
         "not only to peers and to this host (off by default)."],
        ["quiet", "q", "Do not log each registration and removal (errors are still logged)."],
    ]
    optParameters = [
        [name.replace("_", "-"), None, None,
         spec[2] + ("" if _default_text(name) is None else " [default: %s]" % (_default_text(name),))]
        for name, spec in SETTINGS.items()
        if spec[2] is not None
    ] + [
        ["config", "c", None, "Read settings from this TOML or INI file."],
    ]

    compData = usage.Completions(
        optActions={"config": usage.CompleteFiles("*.toml *.ini *.conf")}
    )

    def __init__(self):
        usage.Options.__init__(self)
        self["asap"] = []
        self["peer"] = []

    def opt_asap(self, endpoint):
        """
        ASAP endpoint to listen on; repeat for several [default: tcp:3863:interface=127.0.0.1].
        """
        self["asap"].append(endpoint)

    def opt_peer(self, peer):
        """
        Static ENRP peer: a client endpoint (tcp:HOST:9901, sctp:host=H:port=9901:ppid=12) or HOST:PORT; repeatable.
        """
        self["peer"].append(peer)

    def postOptions(self):
        file_settings = {}
        if self["config"]:
            file_settings = load_config(self["config"])
        settings = {}
        for name, (default, convert, _) in SETTINGS.items():
            value = self.get(name)
            if name in ("announce", "quiet", "enrp-multicast", "enrp-public-dump"):
                value = True if self[name] else None
            if value is None and name in file_settings:
                value = file_settings[name]
            if value is None:
                settings[name] = default
            else:
                settings[name] = convert(value) if convert is not str else str(value)
        for name in ("asap", "peer"):
            values = list(self[name])
            if not values and name in file_settings:
                values = _as_list(file_settings[name])
            if not values:
                values = list(DEFAULTS[name])
            settings[name] = values
        if settings["enrp"] is not None and settings["enrp"].strip().lower() in ("", "none", "off"):
            settings["enrp"] = None
        try:
            settings["psk"] = psk = check_security(settings)
        except InsecureConfiguration as e:
            raise usage.UsageError(str(e)) from None
        if settings["enrp"] and settings["enrp-multicast"] and psk is None and \
                settings["enrp-peer-networks"] == ():
            # RFC 5355 section 2.5: Presence on the group is not
            # authenticated; say whose is followed.
            raise usage.UsageError(
                "--enrp-multicast needs --enrp-peer-networks other than none (the networks "
                "whose registrars may join, e.g. 192.0.2.0/24): ENRP Presence is not "
                "authenticated; with --psk-keys every peer proves a registrar's key instead")
        listeners = [(d, False) for d in settings["asap"]]
        if settings["enrp"]:
            listeners.append((settings["enrp"], True))
        # Every endpoint secured one way or another (RFC 5355 section
        # 2.15.3): learned peers must be too.
        settings["secured"] = psk is not None or any(is_secure(d) for d, _ in listeners)
        for description, peer in listeners:
            if psk is not None:
                try:
                    description = psk.server(description, peer=peer)
                except ValueError as e:
                    raise usage.UsageError(str(e)) from None
            check_endpoint(description)
        if settings["http"] is not None and settings["http"].strip().lower() in ("", "none", "off"):
            settings["http"] = None
        if settings["http"]:
            check_endpoint(settings["http"])
        # A PE's connection carries a keep-alive and its ack every interval,
        # a peer's a Presence every heartbeat cycle: neither may look idle.
        # With --max-keep-alive-rate the interval may grow to 60 s.
        interval = settings["keep-alive-interval"]
        if settings["max-keep-alive-rate"]:
            interval = max(interval, MAX_STRETCHED_INTERVAL)
        busiest = max(interval + settings["keep-alive-timeout"],
                      settings["peer-heartbeat-cycle"], settings["peer-max-time-last-heard"])
        if settings["idle-timeout"] <= busiest:
            raise usage.UsageError(
                "--idle-timeout ({:g} s) must be longer than a keep-alive interval and its "
                "timeout and than the ENRP heartbeat ({:g} s)".format(
                    settings["idle-timeout"], busiest))
        self.settings = settings


def _as_list(value):
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).replace("\n", ",").split(",") if v.strip()]


def load_config(path):
    """
    Read a TOML or INI configuration file.

    @return: a C{dict} of setting name (with dashes) to raw value.
    @raise usage.UsageError: if the file cannot be read or parsed, or names
        an unknown setting.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise usage.UsageError("cannot read config file {}: {}".format(path, e.strerror)) from None
    raw = None
    toml_error = None
    if tomllib is not None:
        try:
            raw = tomllib.loads(data.decode("utf-8"))
            if isinstance(raw.get("enrp"), dict):
                raw = raw["enrp"]
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            toml_error = e
    if raw is None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(data.decode("utf-8"), source=path)
        except (configparser.Error, UnicodeDecodeError) as e:
            reason = toml_error or e
            raise usage.UsageError(
                "cannot parse config file {}: {}".format(path, str(reason).splitlines()[0])
            ) from None
        if parser.has_section("enrp"):
            raw = dict(parser.items("enrp"))
        else:
            raw = dict(parser.defaults())
    known = set(SETTINGS) | {"asap", "peer"}
    out = {}
    for key, value in raw.items():
        name = str(key).replace("_", "-").lower()
        if name not in known:
            raise usage.UsageError("unknown setting {!r} in config file {}".format(key, path))
        out[name] = value
    return out


def check_endpoint(description):
    """
    Check that an endpoint string parses (without listening).

    @raise usage.UsageError: with a one-line reason.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as e:
        reason = e.args[0] if e.args else e
        raise usage.UsageError("bad endpoint {!r}: {}".format(description, reason)) from None


def makeService(options):
    """
    Build the registrar service from parsed L{Options}.
    """
    s = getattr(options, "settings", None)
    if s is None:
        options.postOptions()
        s = options.settings
    rng = random.SystemRandom()
    server_id = s["id"] if s["id"] is not None else new_server_id(rng)
    config = RegistrarConfig(
        server_id=server_id,
        keep_alive_interval=s["keep-alive-interval"],
        keep_alive_timeout=s["keep-alive-timeout"],
        max_keep_alive_rate=s["max-keep-alive-rate"] or 0.0,
        max_bad_pe_reports=s["max-bad-pe-reports"],
        max_hr_items=s["max-hr-items"],
        max_hr_items_cap=s["max-hr-items-cap"],
        max_increment=s["max-increment"] or None,
        max_pool_elements=s["max-pool-elements"],
        log_events=not s["quiet"],
        max_hr_rate=s["max-hr-rate"] or None,
        max_eu_rate=s["max-eu-rate"] or None,
        sources=SourceSettings(
            max_pes=s["max-pes-per-source"] or None,
            max_pools=s["max-pools-per-source"] or None,
            hr_rate=s["max-hr-rate-per-source"] or None,
            eu_rate=s["max-eu-rate-per-source"] or None,
            report_window=s["unreachable-report-window"],
            ipv6_prefix=s["ipv6-source-prefix"],
        ),
    )
    connection_limits = ConnectionLimits(
        first_message=s["message-timeout"],
        message=s["message-timeout"],
        idle=s["idle-timeout"],
        output_buffer=s["max-output-buffer"],
        stalled=s["stall-timeout"],
        per_source=s["max-connections-per-source"] or None,
        total=s["max-connections"] or None,
        ipv6_prefix=s["ipv6-source-prefix"],
    )
    announce = None
    if s["announce"]:
        announce = AnnounceSettings(
            group=s["announce-group"],
            interval=s["announce-interval"],
            ttl=s["announce-ttl"],
            interface=s["announce-interface"],
        )
    enrp_config = ENRPConfig(
        heartbeat_cycle=s["peer-heartbeat-cycle"],
        max_time_last_heard=s["peer-max-time-last-heard"],
        max_time_no_response=s["peer-max-time-no-response"],
        mentor_discovery_timeout=s["mentor-discovery-timeout"],
        takeover_expiry=s["takeover-expiry"],
        max_elements_per_ht_request=s["max-elements-per-ht-request"],
    )
    registrar = RegistrarService(
        config,
        asap_endpoints=s["asap"],
        enrp_endpoint=s["enrp"],
        peers=s["peer"],
        announce=announce,
        min_address_scope=s["min-address-scope"],
        max_elements_per_ht_request=s["max-elements-per-ht-request"],
        enrp_config=enrp_config,
        enrp_multicast=s["enrp-multicast-group"] if s["enrp-multicast"] else None,
        enrp_multicast_ttl=s["enrp-multicast-ttl"],
        enrp_multicast_interface=s["enrp-multicast-interface"],
        psk=s.get("psk"),
        peer_networks=s.get("enrp-peer-networks"),
        public_dump=s.get("enrp-public-dump", False),
        secured=s.get("secured", False),
        reload_on_sighup=True,
        rng=random.Random(rng.getrandbits(64)),
        exit_on_listen_failure=True,
        connection_limits=connection_limits,
        http=s.get("http"),
        csp=s.get("csp"),
        csp_interval=s.get("csp-interval", 0.25),
    )
    # A registrar holds hundreds of thousands of long-lived objects (PEs,
    # connections); CPython's own schedule would stop it for a pass over
    # all of them every few seconds under load (doc/perf/registrar.rst,
    # doc/security.rst): the collector follows the registrar's schedule.
    collector = CollectorService(registrar.reactor, sweep=s["gc-sweep-interval"])
    collector.setName("collector")
    collector.setServiceParent(registrar)
    return registrar
