"""
Fetching a registrar's handlespace over ENRP, sans I/O (what RSPLIB's
``hsdump`` does): pose as an ENRP peer, send a List Request and Handle
Table Requests, and follow the M ("more to send") flag of each Handle
Table Response (RFC 5353 sections 3.2.2 and 3.2.3).
"""
import attrs

from rserpool.wire import (
    ENRPError,
    HandleTableRequest,
    HandleTableResponse,
    ListRequest,
    ListResponse,
)

__all__ = ["HandleTableDump", "DumpError"]


class DumpError(Exception):
    """
    The registrar refused or failed; C{str()} is one line.
    """


@attrs.define
class HandleTableDump:
    """
    The requester's side of a handle table download.

    Call L{start} for the first messages to send, then L{received} with
    each ENRP message; it returns the messages to send next.  L{done} tells
    when the table is complete; L{pools} maps each pool handle to its
    L{rserpool.wire.PoolElement}s, L{servers} lists the registrar's peers
    (L{rserpool.wire.ServerInformation}).

    @ivar own_id: the id this requester claims (non-zero, random).
    @ivar max_pages: a bound on the Handle Table Responses accepted.
    """

    own_id: int
    max_pages: int = 100000
    pools: dict = attrs.Factory(dict)
    servers: list = attrs.Factory(list)
    registrar_id: int = 0
    pages: int = 0
    done: bool = False
    listed: bool = False

    def start(self):
        """
        The first messages: List Request, then Handle Table Request.
        """
        return [ListRequest(self.own_id, 0), HandleTableRequest(self.own_id, 0)]

    def received(self, message):
        """
        Take one ENRP message.

        @return: the messages to send next.
        @raise DumpError: on a rejection or an ENRP Error.
        """
        if isinstance(message, ListResponse):
            self.listed = True
            if not message.reject:
                self.servers = list(message.servers)
            return []
        if isinstance(message, ENRPError):
            raise DumpError("registrar answered with an ENRP Error: %s"
                            % message.error.summary())
        if not isinstance(message, HandleTableResponse):
            return []
        if message.reject:
            raise DumpError("registrar %08x rejected the Handle Table Request" % message.sender_id)
        self.registrar_id = message.sender_id
        self.pages += 1
        for entry in message.entries:
            pes = self.pools.setdefault(entry.pool_handle, [])
            known = {pe.identifier for pe in pes}
            pes.extend(pe for pe in entry.pool_elements if pe.identifier not in known)
        if message.more_to_send and self.pages < self.max_pages:
            # RFC 5353 section 3.2.3: ask again for the next part.
            return [HandleTableRequest(self.own_id, message.sender_id)]
        self.done = True
        return []
