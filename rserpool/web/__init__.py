"""
What operators see of a registrar, a pool element or a pool user, over
HTTP (issue #16): Prometheus metrics, a live handlespace page, a JSON API
and health checks, served by twisted.web on one listener that is off
unless asked for (C{twistd enrp --http ENDPOINT}, C{rserpool pe --http
ENDPOINT}).

 - L{rserpool.web.http}: the listener, hardened against slow and hostile
   clients (bounded requests, deadlines, connections per source).
 - L{rserpool.web.metrics}: the metrics, computed from the state the
   registrar keeps anyway, with prometheus-client's registry and text
   exposition.
 - L{rserpool.web.monitor}: the registrar's counters, recent events and
   resources (C{/metrics}, C{/healthz}, C{/readyz}, C{/api/v1/...}, C{/},
   C{/events}).
 - L{rserpool.web.page}: the handlespace page (HTML that works without
   JavaScript; C{static/} makes it live).

The sans-IO machines only count (one increment per message); everything
here runs on the Twisted side, in the reactor thread.
"""
