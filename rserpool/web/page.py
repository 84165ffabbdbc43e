"""
The handlespace page (C{/} of a registrar's HTTP listener): plain HTML
rendered here, complete without JavaScript; C{static/rserpool.js} makes it
live (it listens to C{/events} and swaps in C{?fragment=1} of the same
view, and filters as one types).

Views, by query arguments: every pool (C{/}, its handles filtered by
C{q}), or one pool's PEs (C{?pool=HANDLE}, filtered by C{q}: PE
identifier, address, port, home registrar, policy); both a page of
L{PAGE_SIZE} rows at a time (C{page=N}), so that 10,000 PEs cost what 100
do.
"""
import datetime
import html
from urllib.parse import quote_from_bytes, urlencode

from twisted.web.resource import NoResource, Resource

from rserpool.codes import POLICY_FIELDS
from rserpool.web.common import arg as _arg
from rserpool.web.common import handle_text, pe_matches
from rserpool.web.common import int_arg as _int_arg

__all__ = ["HandlespacePage", "PAGE_SIZE"]

#: Rows per page.
PAGE_SIZE = 100
#: Recent events shown.
EVENTS_SHOWN = 30

_LOAD_FIELDS = ("load", "load_degradation", "load_dpf", "weight_dpf")


def _e(text):
    return html.escape(str(text), quote=True)


def duration(seconds):
    """
    C{"42 s"}, C{"5 min 3 s"}, C{"2 h 05 min"}, C{"3 d 4 h"}.
    """
    seconds = max(0, int(seconds))
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %d s" % divmod(seconds, 60)
    if seconds < 86400:
        return "%d h %02d min" % (seconds // 3600, seconds % 3600 // 60)
    return "%d d %d h" % (seconds // 86400, seconds % 86400 // 3600)


def policy_text(policy):
    """
    A policy and its values for people: C{"LeastUsed (load 25%)"}.
    """
    fields = POLICY_FIELDS[policy.policy_type]
    parts = []
    for name, value in zip(fields, policy.values):
        if name in _LOAD_FIELDS:
            parts.append("%s %.0f%%" % (name.replace("_", " "), 100.0 * value / 0xFFFFFFFF))
        else:
            parts.append("%s %d" % (name.replace("_", " "), value))
    return policy.name + (" (%s)" % ", ".join(parts) if parts else "")


def _addresses(wire):
    texts = ["[%s]" % a if a.version == 6 else str(a) for a in wire.addresses]
    return "%s:%d" % (",".join(texts), wire.port)


def _link(**args):
    items = []
    for key, value in args.items():
        if value in (None, "", 1) and key == "page":
            continue
        if value is None or value == "":
            continue
        if isinstance(value, bytes):
            items.append("%s=%s" % (key, quote_from_bytes(value, safe="")))
        else:
            items.append(urlencode({key: value}))
    return "./" + ("?" + "&amp;".join(items) if items else "")


def _pager(total, page, pages, **args):
    if pages <= 1:
        return ""
    out = ['<nav class="pager" aria-label="pages">']
    if page > 1:
        out.append('<a rel="prev" href="%s">&laquo; previous</a>' % _link(page=page - 1, **args))
    out.append("<span>page %d of %d</span>" % (page, pages))
    if page < pages:
        out.append('<a rel="next" href="%s">next &raquo;</a>' % _link(page=page + 1, **args))
    out.append("</nav>")
    return " ".join(out)


class HandlespacePage(Resource):
    """
    The page, and the root of the registrar's HTTP listener.
    """

    def __init__(self, monitor):
        Resource.__init__(self)
        self.monitor = monitor

    def getChild(self, name, request):
        if name == b"":
            return self
        return NoResource()

    def render_GET(self, request):
        pool = _arg(request, "pool")
        query = (_arg(request, "q", b"") or b"").decode("utf-8", "replace").strip()[:200]
        page = _int_arg(request, "page", 1, 1, 1 << 20)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        live = self.live(pool, query, page)
        if _arg(request, "fragment"):
            return live.encode("utf-8")
        return self.document(pool, query, live).encode("utf-8")

    # -- the whole page ---------------------------------------------------

    def document(self, pool, query, live):
        registrar = self.monitor.service.registrar
        own = "%08x" % registrar.server_id
        crumbs = '<a href="./">All pools</a>'
        hidden = ""
        label = "Filter pools"
        placeholder = "pool handle"
        if pool is not None:
            crumbs += " &rsaquo; <strong>%s</strong>" % _e(handle_text(pool))
            hidden = '<input type="hidden" name="pool" value="%s">' % _e(handle_text(pool))
            label = "Filter PEs"
            placeholder = "PE id, address, port, home, policy"
        return """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Registrar %(own)s &middot; rserpool</title>
<link rel="stylesheet" href="static/rserpool.css">
</head>
<body>
<header>
<h1>Registrar <code>%(own)s</code></h1>
<span id="live-status" class="status" title="JavaScript off: reload to update">static</span>
</header>
<nav class="crumbs">%(crumbs)s</nav>
<form id="filter" method="get" action="./" role="search">
%(hidden)s<label for="q">%(label)s</label>
<input type="search" id="q" name="q" value="%(query)s" placeholder="%(placeholder)s" autocomplete="off">
<button type="submit">Filter</button>
</form>
<div id="live" aria-live="polite">
%(live)s
</div>
<footer>rserpool &middot; <a href="metrics">metrics</a> &middot;
<a href="api/v1/handlespace">JSON</a> &middot; <a href="readyz">readyz</a></footer>
<script src="static/rserpool.js" defer></script>
</body>
</html>
""" % {"own": _e(own), "crumbs": crumbs, "hidden": hidden, "label": label,
       "query": _e(query), "placeholder": placeholder, "live": live}

    # -- the part that updates ----------------------------------------------

    def live(self, pool, query, page):
        parts = [self.summary()]
        if pool is not None:
            parts.append(self.pool_view(pool, query, page))
        else:
            parts.append(self.pools_view(query, page))
            parts.append(self.peers())
        parts.append(self.recent())
        return "\n".join(parts)

    def summary(self):
        monitor = self.monitor
        data = monitor.registrar_json()
        state = "ready" if data["ready"] else (
            "synchronizing" if monitor.listening() else "not listening")
        rows = [
            ("Registrar", "<code>%s</code>" % _e(data["id"])),
            ("Up", _e(duration(data["uptime"]))),
            ("State", '<span class="state-%s">%s</span>' % (_e(state), _e(state))),
            ("Pools", "%d" % data["pools"]),
            ("PEs", "%d (%d at home here)" % (data["pool_elements"], data["owned"])),
            ("Peers", "%d" % data["peers"] if data["enrp"] else "ENRP off"),
        ]
        cells = "".join("<div><dt>%s</dt><dd>%s</dd></div>" % r for r in rows)
        return '<section class="summary"><dl>%s</dl></section>' % cells

    def pools_view(self, query, page):
        hs = self.monitor.service.registrar.handlespace
        own = self.monitor.service.registrar.server_id
        pools = sorted(hs.pools(), key=lambda p: p.handle)
        if query:
            words = query.lower().split()
            pools = [p for p in pools if all(w in handle_text(p.handle).lower() for w in words)]
        total = len(pools)
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
        page = min(page, pages)
        shown = pools[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
        out = ['<section id="pools"><h2>Pools <small>%d%s</small></h2>' % (
            total, " matching" if query else "")]
        if not shown:
            out.append('<p class="empty">%s</p>' % (
                "No pool matches the filter." if query else "No pool: no PE has registered."))
        else:
            out.append('<table class="pools"><thead><tr><th>Pool</th><th>PEs</th>'
                       '<th>At home here</th><th>Policy</th><th>Transport</th></tr></thead><tbody>')
            for pool in shown:
                first = next(iter(pool), None)
                owned = sum(1 for pe in pool if pe.home_registrar == own)
                transport = first.user_transport.wire.protocol if first is not None else "?"
                out.append(
                    '<tr data-pool="%s"><td><a href="%s">%s</a></td><td class="n">%d</td>'
                    '<td class="n">%d</td><td>%s</td><td>%s, %s</td></tr>' % (
                        _e(handle_text(pool.handle)), _link(pool=bytes(pool.handle)),
                        _e(handle_text(pool.handle)), len(pool), owned,
                        _e(first.policy.name if first is not None else pool.policy_type.name),
                        _e(transport), "enhanced" if pool.control_channel else "basic"))
            out.append("</tbody></table>")
        out.append(_pager(total, page, pages, q=query))
        out.append("</section>")
        return "\n".join(out)

    def pool_view(self, handle, query, page):
        monitor = self.monitor
        hs = monitor.service.registrar.handlespace
        own = monitor.service.registrar.server_id
        now = monitor.clock.seconds()
        pool = hs.pool(handle)
        name = handle_text(handle)
        if pool is None:
            return ('<section id="pool"><h2>Pool <q>%s</q></h2><p class="empty">No such pool '
                    'now: its last PE has left (or it never had one).</p></section>' % _e(name))
        members = sorted(pool, key=lambda pe: pe.pe_id)
        if query:
            members = [pe for pe in members if pe_matches(pe, query)]
        total = len(members)
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
        page = min(page, pages)
        shown = members[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
        out = ['<section id="pool"><h2>Pool <q>%s</q> <small>%d PEs%s</small></h2>' % (
            _e(name), len(pool), ", %d matching" % total if query else "")]
        if not shown:
            out.append('<p class="empty">No PE matches the filter.</p>')
        else:
            out.append(
                '<table class="pes"><thead><tr><th>PE</th><th>Address</th><th>Transport</th>'
                '<th>Policy</th><th>Home</th><th>Registration life</th><th>Registered</th>'
                '<th>Reports</th></tr></thead><tbody>')
            for pe in shown:
                wire = pe.user_transport.wire
                mode = "data + control" if pool.control_channel else "data only"
                life = "%g s" % (pe.registration_life / 1000.0) if pe.registration_life > 0 \
                    else "unlimited"
                home = "%08x" % pe.home_registrar
                out.append(
                    '<tr data-pe="%08x"><td><code>%08x</code></td><td>%s</td><td>%s, %s</td>'
                    '<td>%s</td><td><code>%s</code>%s</td><td>%s</td><td>%s ago</td>'
                    '<td class="n">%d</td></tr>' % (
                        pe.pe_id, pe.pe_id, _e(_addresses(wire)), _e(wire.protocol), mode,
                        _e(policy_text(pe.policy)), home,
                        ' <span class="tag">here</span>' if pe.home_registrar == own else "",
                        _e(life), _e(duration(now - pe.registration_time)),
                        pe.unreachable_reports))
            out.append("</tbody></table>")
        out.append(_pager(total, page, pages, pool=bytes(handle), q=query))
        out.append("</section>")
        return "\n".join(out)

    def peers(self):
        monitor = self.monitor
        if monitor.service.enrp is None:
            return ""
        peers = monitor.peers_json()
        out = ['<section id="peers"><h2>ENRP peers <small>%d</small></h2>' % len(peers)]
        if not peers:
            out.append('<p class="empty">No peer.</p>')
        else:
            out.append('<table class="peers"><thead><tr><th>Registrar</th><th>Address</th>'
                       '<th>State</th><th>Last heard</th><th>Its PEs</th></tr></thead><tbody>')
            for p in peers:
                out.append('<tr data-peer="%s"><td><code>%s</code>%s</td><td>%s</td><td>%s</td>'
                           '<td>%s ago</td><td class="n">%d</td></tr>' % (
                               _e(p["id"]), _e(p["id"]),
                               ' <span class="tag">mentor</span>' if p["mentor"] else "",
                               _e(p["address"] or "?"), _e(p["state"]),
                               _e(duration(p["last_heard"])), p["owned"]))
            out.append("</tbody></table>")
        out.append("</section>")
        return "\n".join(out)

    def recent(self):
        events = list(self.monitor.events.events)[-EVENTS_SHOWN:]
        out = ['<section id="events"><h2>Recent events</h2>']
        if not events:
            out.append('<p class="empty">None yet.</p>')
        else:
            out.append('<ol class="events" reversed>')
            for event in reversed(events):
                when = datetime.datetime.fromtimestamp(event["time"], datetime.timezone.utc)
                what = [_e(event["kind"])]
                if event.get("pe"):
                    what.append("<code>%s</code>" % _e(event["pe"]))
                if event.get("pool"):
                    what.append("in %s" % _e(event["pool"]))
                if event.get("cause"):
                    what.append("&mdash; %s" % _e(event["cause"]))
                out.append('<li class="event-%s"><time datetime="%s">%s</time> %s</li>' % (
                    _e(event["kind"]), when.isoformat(), when.strftime("%H:%M:%S"),
                    " ".join(what)))
            out.append("</ol>")
        out.append("</section>")
        return "\n".join(out)
