"""
Transport mappings (draft-ietf-rserpool-service section 5): how ASAP, ENRP
and application data travel over a transport protocol.

- :mod:`rserpool.transport.base`: what a state machine sees of a
  connection (:class:`~rserpool.transport.base.IMessageConnection`) and of
  its owner (:class:`~rserpool.transport.base.IMessageReceiver`), whatever
  the mapping.
- :mod:`rserpool.transport.tcp`: the TCP mapping: plain ASAP/ENRP framed by
  their own length field, and the multiplexed control+data framing of
  Enhanced Mode (``doc/tcp-mapping.rst``).
- :mod:`rserpool.transport.multicast`: ASAP Server Announce over UDP
  multicast.

Mappings are chosen by Twisted endpoint strings (``tcp:3863``, later
``sctp:3863``), never hard-coded: only this package touches sockets.
"""
