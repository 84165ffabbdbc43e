"""
ENRP (RFC 5353), sans I/O: the state machine that lets registrars share
one handlespace and take over each other's pool elements
(L{rserpool.enrp.machine}), and an in-memory network of registrars under
one clock for tests and benchmarks (L{rserpool.enrp.memory}).
"""
from rserpool.enrp.machine import ENRPConfig, ENRPServer, Peer, PeerTimer, wire_pool_element

__all__ = ["ENRPConfig", "ENRPServer", "Peer", "PeerTimer", "wire_pool_element"]
