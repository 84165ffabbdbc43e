"""
What one source may make a registrar's ASAP side hold or do (RFC 5355
sections 2.1, 2.2 and 2.13; issue "limits that cannot be dodged by
reconnecting"), sans I/O.

A source is a L{principal <rserpool.limits.principal>}: the TLS-PSK
identity a peer proved, else its address (an IPv6 /64 by default), never
its connection, which an attacker renews for free.  L{SourceLimits} keeps:

 - the connections of each source, to count the PEs they hold in the
   handlespace (the handlespace is the truth: nothing to drift);
 - the pools each source created, with a ceiling;
 - token buckets for handle resolutions and Endpoint Unreachable reports
   per source;
 - the Endpoint Unreachable reports of each PE, one per reporting source
   and forgotten after C{report_window} seconds, so that MAX-BAD-PE-REPORT
   takes that many distinct sources (RFC 5355 section 2.13).

The caller passes the time; nothing here touches a reactor.
"""
import attrs

from rserpool.limits import KeyedBuckets, principal

__all__ = ["SourceSettings", "SourceLimits"]

#: Reporting sources remembered per PE: more than any MAX-BAD-PE-REPORT.
_MAX_REPORTERS = 64


def _optional_positive(instance, attribute, value):
    if value is not None and not value > 0:
        raise ValueError("%s must be positive or None, not %r"
                         % (attribute.name.replace("_", "-"), value))


@attrs.frozen
class SourceSettings:
    """
    The limits per source; C{None} switches one off.  The defaults are far
    above what a deployment of thousands of PEs asks of one host
    (``doc/security.rst`` says how they were chosen).

    @ivar max_pes: PEs one source may hold registered (10,000).
    @ivar max_pools: pools one source may create (1,000).
    @ivar hr_rate: handle resolutions per second per source (2,000; twice
        that at once).
    @ivar eu_rate: Endpoint Unreachable reports per second per source (10;
        twice that at once).
    @ivar report_window: seconds an Endpoint Unreachable report counts
        (60).
    @ivar ipv6_prefix: the prefix length that makes one IPv6 source (64).
    """

    max_pes: int = attrs.field(default=10000, validator=_optional_positive)
    max_pools: int = attrs.field(default=1000, validator=_optional_positive)
    hr_rate: float = attrs.field(default=2000.0, validator=_optional_positive)
    eu_rate: float = attrs.field(default=10.0, validator=_optional_positive)
    report_window: float = attrs.field(default=60.0, validator=_optional_positive)
    ipv6_prefix: int = 64


class SourceLimits:
    """
    The per-source state of a registrar's ASAP side (see the module's
    description).

    @ivar settings: the L{SourceSettings}.
    """

    def __init__(self, settings=None):
        self.settings = settings if settings is not None else SourceSettings()
        s = self.settings
        self._keys = {}
        self._connections = {}
        self._pools = {}
        self._reports = {}
        self._probed = {}
        self._hr = KeyedBuckets(s.hr_rate) if s.hr_rate is not None else None
        self._eu = KeyedBuckets(s.eu_rate) if s.eu_rate is not None else None

    # -- sources ------------------------------------------------------------

    def key(self, conn):
        """
        The source of C{conn}: its TLS-PSK identity, else its address.
        Worked out at its first message (after any TLS handshake), then
        kept.
        """
        key = self._keys.get(conn)
        if key is None:
            peer = getattr(conn, "peer", (None, 0))
            key = principal(getattr(conn, "identity", None), peer[0], self.settings.ipv6_prefix)
            self._keys[conn] = key
            self._connections.setdefault(key, set()).add(conn)
        return key

    def connection_lost(self, conn):
        """
        Forget C{conn}.
        """
        key = self._keys.pop(conn, None)
        if key is not None:
            conns = self._connections.get(key)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._connections[key]

    # -- registrations --------------------------------------------------------

    def pes_of(self, key, handlespace):
        """
        How many PEs the connections of source C{key} hold.
        """
        return sum(handlespace.connection_count(c) for c in self._connections.get(key, ()))

    def may_register(self, conn, handle, handlespace):
        """
        Whether C{conn}'s source may register one more PE in C{handle}
        (a new PE; re-registrations are always allowed).

        @return: C{None}, or the reason it may not (for the log).
        """
        s = self.settings
        key = self.key(conn)
        if s.max_pes is not None and self.pes_of(key, handlespace) >= s.max_pes:
            return "its source holds %d PEs, the most one may (--max-pes-per-source)" % s.max_pes
        if s.max_pools is not None and handlespace.pool(handle) is None:
            pools = self._pools.get(key)
            if pools is not None and len(pools) >= s.max_pools:
                # Pools it created may have gone since (their PEs left, or
                # were taken over): count again before refusing.
                pools.intersection_update(
                    h for h in list(pools) if handlespace.pool(h) is not None)
                if len(pools) >= s.max_pools:
                    return ("its source created %d pools, the most one may "
                            "(--max-pools-per-source)" % s.max_pools)
        return None

    def pool_created(self, conn, handle):
        """
        C{conn}'s source created the pool C{handle} (its first PE).
        """
        if self.settings.max_pools is not None:
            self._pools.setdefault(self.key(conn), set()).add(handle)

    # -- rates ------------------------------------------------------------------

    def permit_resolution(self, conn, now):
        """
        Count a handle resolution of C{conn}'s source.

        @return: whether it is within the source's rate.
        """
        return self._hr is None or self._hr.permit(self.key(conn), now)

    def permit_unreachable(self, conn, now):
        """
        Count an Endpoint Unreachable report of C{conn}'s source.

        @return: whether it is within the source's rate.
        """
        return self._eu is None or self._eu.permit(self.key(conn), now)

    # -- Endpoint Unreachable ---------------------------------------------------

    def report(self, handle, pe_id, conn, now):
        """
        Count a report that PE C{pe_id} of C{handle} is unreachable, once
        per source within the report window.

        @return: how many distinct sources reported it within the window.
        """
        window = self.settings.report_window
        all_reports = self._reports
        if window is not None:
            # PEs reported least recently first: drop those whose reports
            # all expired (also those of PEs that left meanwhile).
            while all_reports:
                first = next(iter(all_reports))
                if now - max(all_reports[first].values()) < window:
                    break
                del all_reports[first]
        reports = all_reports.pop((handle, pe_id), None) or {}
        all_reports[(handle, pe_id)] = reports
        if window is not None:
            for key in [k for k, when in reports.items() if now - when >= window]:
                del reports[key]
        key = self.key(conn)
        if key in reports or len(reports) < _MAX_REPORTERS:
            reports[key] = now
        return len(reports)

    def probe_due(self, handle, pe_id, now, interval):
        """
        Whether the registrar may ask PE C{pe_id} of C{handle} now, with an
        Endpoint Keep Alive, whether it is alive, because sources report it
        unreachable: at most once per C{interval} seconds (RFC 5355
        section 2.14: the registrar limits the keep-alives a PE gets, so
        that reports cannot make it flood the PE).  Counted when it is.
        """
        probed = self._probed
        # Oldest first: drop the probes that no longer count.
        while probed:
            first = next(iter(probed))
            if now - probed[first] < interval:
                break
            del probed[first]
        if (handle, pe_id) in probed:
            return False
        probed[(handle, pe_id)] = now
        return True

    def forget_reports(self, handle, pe_id):
        """
        The PE answered, or is gone: its reports no longer count.
        """
        self._reports.pop((handle, pe_id), None)
