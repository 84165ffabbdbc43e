"""
Cutting a byte stream (TCP) into ASAP or ENRP messages by their own length
field.
"""
import struct

from rserpool.codes import ErrorCause
from rserpool.wire.protocol_error import ProtocolError
from rserpool.wire.messages import ASAP, decode

_H = struct.Struct("!H")


class StreamDecoder:
    """
    Reassembles messages from arbitrary chunks of a byte stream.

    Each message is found by its 16-bit length field and is followed by
    padding to the next multiple of 4 bytes.  Memory is bounded: while
    L{feed} runs, one message (64 KiB) plus the chunk; between calls, less
    than one message (at most 65,535 bytes, L{buffered}), whatever the
    stream: a header announcing 0xFFFF bytes followed by 100 bytes holds
    104 bytes until the rest comes (or the connection's deadline ends it).

    Usage::

        decoder = StreamDecoder("asap")
        for item in decoder.feed(chunk):
            if isinstance(item, ProtocolError):
                ...   # answer with an Error; the stream goes on
            else:
                ...   # a message

    A message that is well framed but invalid yields its L{ProtocolError}
    and decoding continues with the next message, as the RFCs allow.  A
    length field below 4 bytes means the framing itself is lost: that error
    is raised, and the decoder refuses further input; close the connection.
    The messages (and errors) that came before the broken header in the
    same chunk are the raised error's C{messages}: handle them first, and
    what comes out does not depend on how the stream was cut.
    """

    def __init__(self, protocol=ASAP, decode=decode):
        """
        @param protocol: C{"asap"} or C{"enrp"}.
        @param decode: the function that turns one message's bytes into a
            message (the default is L{rserpool.wire.decode}).
        """
        self.protocol = protocol
        self._decode = decode
        self._buffer = bytearray()
        self._broken = None

    def feed(self, chunk):
        """
        Add bytes and return what they complete.

        @param chunk: the next bytes of the stream.
        @return: a list of messages and L{ProtocolError} instances, in order.
        @raise ProtocolError: when the stream cannot be framed any more.
        """
        if self._broken is not None:
            broken = self._broken
            raise ProtocolError(broken.cause, broken.reason, broken.info)
        buf = self._buffer
        buf += chunk
        out = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (length,) = _H.unpack_from(buf, pos + 2)
            if length < 4:
                self._broken = error = ProtocolError(
                    ErrorCause.INVALID_VALUES,
                    "message length %d in stream: framing lost" % length,
                    bytes(buf[pos : pos + 4]),
                )
                error.messages = out
                del buf[:]
                raise error
            total = (length + 3) & ~3
            if n - pos < total:
                break
            frame = bytes(buf[pos : pos + total])
            pos += total
            try:
                out.append(self._decode(frame, self.protocol))
            except ProtocolError as e:
                # Without its traceback: the traceback holds this frame,
                # whose `out` holds the error, a cycle that only the
                # garbage collector frees (a flood of bad messages kept
                # every read's errors, frames and bytes for minutes).
                out.append(e.detached())
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self):
        """
        How many bytes wait for the rest of their message.
        """
        return len(self._buffer)
