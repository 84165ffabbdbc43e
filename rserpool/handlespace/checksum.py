"""
The ENRP PE checksum (RFC 5353 section 2.1 and section 3.6.1, "Auditing
Procedures"), summed the way RSPLIB sums it so that our registrar
and RSPLIB registrars agree in audits.

How RSPLIB computes it (src/poolelementnode-template_impl.h and
src/poolhandlespacechecksum.c, read for behaviour only):

 - Each PE contributes the 16-bit words of its pool handle and then the 16-bit
   words of its PE identifier in network byte order.  The handle and the
   identifier are summed by two separate calls, so the identifier always
   starts on a word boundary: a handle of odd length is padded with one zero
   byte I{before} the identifier is added.  Concatenating the handle and the
   identifier into one byte string would misalign the identifier and give
   another sum; we follow RSPLIB.
 - The words are read from memory as host-order C{uint16_t} and added into a
   C{uint32_t} accumulator: per PE, then per owner (the PR's "ownership
   checksum").  Adding and removing a PE are a plain addition and
   subtraction modulo 2**32, so the accumulator is kept incrementally.
 - "Finishing" folds the carries into 16 bits and complements (the Internet
   checksum of RFC 1071); the C{uint16_t} result is copied into the PE
   Checksum parameter without byte swapping.

Because of RFC 1071's byte-order independence, this gives exactly the
RFC 1071 Internet checksum in network byte order (the RFC's definition) as
long as the 32-bit accumulator does not wrap.  It wraps once an owner's PEs
sum to 2**32 or more (some ten to twenty thousand PEs per owner, depending
on the handles), and then the result depends on the host's byte order.  We
reproduce RSPLIB on little-endian hosts (x86 and ARM, where RSPLIB runs),
words read little-endian and the 32-bit wrap included, so audits agree with
RSPLIB for any number of PEs.  L{finish_checksum} returns the value as the
unsigned 16-bit integer whose big-endian encoding is the two bytes on the
wire (what the codec's PE Checksum parameter holds).
"""
_MASK32 = 0xFFFFFFFF


def pe_contribution(handle, pe_id):
    """
    A PE's contribution to its owner's checksum accumulator.

    @param handle: the pool handle (bytes).
    @param pe_id: the 32-bit PE identifier.
    @return: a non-negative integer to add to (or subtract from) an owner's
        accumulator.
    """
    return handle_contribution(handle) + identifier_contribution(pe_id)


def handle_contribution(handle):
    """
    The pool handle's part of a PE's contribution (the same for every PE of
    a pool, so a pool can keep it).

    @param handle: the pool handle (bytes).
    @return: a non-negative integer.
    """
    if len(handle) & 1:
        # RSPLIB copies a trailing odd byte into a zeroed word: pad with zero.
        handle = handle + b"\x00"
    total = 0
    for i in range(0, len(handle), 2):
        # A word as a little-endian host reads it from memory.
        total += handle[i] | (handle[i + 1] << 8)
    return total


def identifier_contribution(pe_id):
    """
    The PE identifier's part of a PE's contribution.

    @param pe_id: the 32-bit PE identifier.
    @return: a non-negative integer.
    """
    # The identifier in network byte order, read as two little-endian words.
    return (
        ((pe_id >> 24) & 0xFF) | (((pe_id >> 16) & 0xFF) << 8)
    ) + (((pe_id >> 8) & 0xFF) | ((pe_id & 0xFF) << 8))


def finish_checksum(accumulator):
    """
    Turn an owner's accumulator into the 16-bit PE checksum.

    @param accumulator: the sum of L{pe_contribution} over the owner's PEs
        (any non-negative integer: it is reduced modulo 2**32 as RSPLIB's
        C{uint32_t} accumulator is).
    @return: the checksum as an unsigned 16-bit integer whose big-endian
        encoding is the two bytes RSPLIB puts on the wire.  An owner with no
        PEs has checksum 0xffff.
    """
    total = accumulator & _MASK32
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    value = ~total & 0xFFFF
    # The little-endian host writes the uint16 unswapped: the first byte on
    # the wire is its low byte.
    return ((value & 0xFF) << 8) | (value >> 8)


def compute_checksum(elements):
    """
    Compute a PE checksum from scratch.

    @param elements: an iterable of C{(pool_handle, pe_id)} pairs, the PEs
        one registrar owns.
    @return: the 16-bit checksum (see L{finish_checksum}).
    """
    accumulator = 0
    for handle, pe_id in elements:
        accumulator += pe_contribution(handle, pe_id)
    return finish_checksum(accumulator)
