"""
Reloading a registrar's TLS-PSK keys (RFC 5355): new handshakes use the
keys read again, and connections of identities no longer in their file
are closed, so that removing a key revokes it.  C{twistd enrp} reloads on
SIGHUP.
"""
import signal

from twisted.logger import Logger

from rserpool.services.listeners import AfterListening
from rserpool.transport.psk import KeyFileError

__all__ = ["KeyReloadService"]


class KeyReloadService(AfterListening):
    """
    Reloads the key files of the TLS-PSK listeners on demand
    (L{reload_keys}) and, if asked, on SIGHUP while it runs.
    """

    log = Logger()

    def __init__(self, listeners, reactor, on_sighup=False):
        """
        @param listeners: the registrar's L{ListenerService}, whose
            C{psk_creators} hold the keys.
        @param reactor: the reactor (SIGHUP is handled in its thread).
        @param on_sighup: reload on SIGHUP once the listeners listen.
        """
        AfterListening.__init__(self, listeners)
        self.reactor = reactor
        self.on_sighup = on_sighup
        self._previous = None

    def begin(self):
        if self.on_sighup and self.listeners.psk_creators and hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(
                signal.SIGHUP, lambda number, frame: self.reactor.callFromThread(self.reload_keys))

    def reload_keys(self):
        """
        Read the TLS-PSK key files of the listeners again: new handshakes
        use the new keys, and connections authenticated with an identity
        that is no longer in its file are closed.  A file that cannot be
        read or is wrong leaves its keys as they were.

        @return: the number of connections closed.
        """
        closed = 0
        for creator in self.listeners.psk_creators:
            try:
                removed = creator.reload()
            except KeyFileError as e:
                self.log.error("keys not reloaded: {error}", error=str(e))
                continue
            self.log.info("reloaded {count} keys from {path}", count=len(creator.identities),
                          path=creator.path)
            if removed:
                count = creator.revoke(removed)
                self.log.info("closed {count} connections of revoked identities {identities}",
                              count=count, identities=sorted(removed))
                closed += count
        return closed

    def stopService(self):
        AfterListening.stopService(self)
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
