"""
Example RSerPool services, each runnable as a pool element with
``rserpool pe --handle HANDLE SERVICE``.

 - L{echo}: RFC 862, every message comes back.
 - L{discard}: RFC 863, everything is dropped.
 - L{daytime}: RFC 867, one line with the time, then the session ends.
 - L{chargen}: RFC 864, lines of characters until the client goes away.
 - L{transfer}: the services draft's resumable file transfer (section
   4.5.2), failing over mid-stream with a state cookie and the failover
   callback.
 - L{pingpong}: RSPLIB's PingPong (PPID 33, its packet format and
   cookies), for interoperability with C{rspserver -pingpong} and
   C{pingpongclient}; C{rserpool pingpong} is its pool user.

Every service works in Basic Mode (a plain TCP connection) and in Enhanced
Mode (through L{rserpool.session}, one message per C{write}).
"""

#: Service name to the module that provides C{server_factory(**options)}.
SERVICES = {
    "echo": "rserpool.examples.echo",
    "discard": "rserpool.examples.discard",
    "daytime": "rserpool.examples.daytime",
    "chargen": "rserpool.examples.chargen",
    "transfer": "rserpool.examples.transfer",
    "pingpong": "rserpool.examples.pingpong",
}


def server_factory(name, **options):
    """
    The server factory of example service C{name}.

    @param options: service options (e.g. C{clock}, C{root}).
    @raise KeyError: for an unknown service.
    """
    import importlib

    module = importlib.import_module(SERVICES[name])
    return module.server_factory(**options)
