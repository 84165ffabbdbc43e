"""
The PE checksum against RSPLIB: every ENRP Presence in the recorded RSPLIB
3.4.4 session carries its sender's checksum over the PEs it owns.  Rebuild
each owner's PEs from the Handle Updates and Handle Table Responses of the
same capture and compute the checksum with our handlespace code: it must
equal what RSPLIB sent, every time.
"""
import os

from twisted.trial import unittest

from rserpool.handlespace import compute_checksum
from rserpool.wire import ADD_PE, HandleTableResponse, HandleUpdate, Presence, decode

SESSION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "rsplib-3.4-session.pcap")


class RSPLIBChecksumTests(unittest.TestCase):
    def test_every_presence_checksum(self):
        from rserpool.tools.capture import iter_messages

        owned = {}

        def move(key, owner, add=True):
            for pes in owned.values():
                pes.discard(key)
            if add:
                owned.setdefault(owner, set()).add(key)

        checked = 0
        nonempty = 0
        for rec in iter_messages(SESSION):
            m = decode(rec.payload, rec.protocol)
            if isinstance(m, HandleUpdate):
                move((m.pool_handle, m.pool_element.identifier), m.pool_element.home_registrar, m.action == ADD_PE)
            elif isinstance(m, HandleTableResponse):
                for entry in m.entries:
                    for pe in entry.pool_elements:
                        move((entry.pool_handle, pe.identifier), pe.home_registrar)
            elif isinstance(m, Presence):
                mine = sorted(owned.get(m.sender_id, ()))
                self.assertEqual(
                    compute_checksum(mine), m.checksum, "frame %d from %08x" % (rec.frame, m.sender_id)
                )
                checked += 1
                nonempty += bool(mine)
        self.assertEqual(checked, 122)
        self.assertGreater(nonempty, 50)
