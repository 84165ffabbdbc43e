"""
rserpool: Reliable Server Pooling (RSerPool, RFC 5351-5356) on Twisted.

Subpackages:

- :mod:`rserpool.wire`: the sans-IO ASAP/ENRP codec (RFC 5352, 5353, 5354).
- :mod:`rserpool.handlespace`: pools, pool elements, selection policies
  (RFC 5356) and their indexes, with no reactor.
- :mod:`rserpool.tools`: operator tools (capture reading, pretty printing).
"""
from rserpool._version import __version__

__all__ = ["__version__"]
