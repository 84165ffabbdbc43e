"""
The C{rserpool:} client endpoint: connect any Twisted protocol to a pool.

    rserpool:HANDLE[:registrar=ENDPOINT][:mode=auto|basic|enhanced]
            [:stale=SECONDS][:attempts=N][:timeout=SECONDS][:heartbeat=SECONDS]
            [:max_missed=N][:keys=FILE[:identity=ID]]

See L{rserpool.pu.endpoint_from_string} for the keys.
"""
from rserpool.pu import PoolEndpointParser

rserpoolPoolEndpoint = PoolEndpointParser()
