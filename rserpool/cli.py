"""
The ``rserpool`` command: operator tools for RSerPool.

``rserpool decode``   pretty-prints ASAP/ENRP messages from hex or a capture.
``rserpool examples`` prints one example of every message type, in hex.
"""
import argparse
import sys

from rserpool import __version__


def _hex_lines(stream):
    """
    Yield (line number, protocol override or None, bytes or error text) for
    each message line of C{stream}.  A comment line ``# asap ...`` or
    ``# enrp ...`` (what ``rserpool examples`` prints) sets the protocol of
    the lines that follow.
    """
    protocol = None
    for number, line in enumerate(stream, 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            words = text[1:].split()
            if words and words[0].lower() in ("asap", "enrp"):
                protocol = words[0].lower()
            continue
        cleaned = "".join(text.split()).replace(":", "")
        if cleaned.lower().startswith("0x"):
            cleaned = cleaned[2:]
        try:
            yield number, protocol, bytes.fromhex(cleaned)
        except ValueError:
            yield number, protocol, "line %d is not hex" % number


class _Decoder:
    """
    Decodes, prints and optionally verifies messages; counts problems.
    """

    def __init__(self, out, verbose, verify):
        self.out = out
        self.verbose = verbose
        self.verify = verify
        self.messages = 0
        self.failed = 0
        self.differ = 0

    def handle(self, label, protocol, data):
        from rserpool.tools import legacy
        from rserpool.tools.pretty import summary, tree
        from rserpool.wire import ProtocolError, decode, encode

        self.messages += 1
        try:
            message = decode(data, protocol)
        except ProtocolError as e:
            self.failed += 1
            reason = legacy.explain(data, protocol) or str(e)
            self.out.write("%s %s: undecodable (%d bytes): %s\n" % (label, protocol.upper(), len(data), reason))
            if self.verbose:
                self.out.write("  bytes: %s\n" % data.hex())
            return
        self.out.write("%s %s\n" % (label, summary(message)))
        if self.verbose:
            for line in tree(message).splitlines()[1:]:
                self.out.write("  %s\n" % line)
        if self.verify:
            again = encode(message)
            if again != bytes(data):
                self.differ += 1
                self.out.write(
                    "%s re-encoding differs:\n  in:  %s\n  out: %s\n" % (label, bytes(data).hex(), again.hex())
                )

    def close(self, err):
        text = "%d messages, %d undecodable" % (self.messages, self.failed)
        if self.verify:
            text += ", %d re-encode differently" % self.differ
        err.write(text + "\n")
        return 1 if (self.failed or self.differ) else 0


def _decode(args, out, err):
    decoder = _Decoder(out, args.verbose, args.verify)
    if args.pcap:
        from rserpool.tools.capture import CaptureError, iter_messages

        if args.input not in (None,):
            err.write("rserpool decode: give either --pcap FILE or hex input, not both\n")
            return 2
        try:
            for rec in iter_messages(args.pcap):
                if args.proto and rec.protocol != args.proto:
                    continue
                label = "%d %s:%d > %s:%d %s" % (
                    rec.frame,
                    rec.src[0],
                    rec.src[1],
                    rec.dst[0],
                    rec.dst[1],
                    rec.transport,
                )
                decoder.handle(label, rec.protocol, rec.payload)
        except (CaptureError, OSError) as e:
            err.write("rserpool decode: %s: %s\n" % (args.pcap, e))
            return 2
        return decoder.close(err)
    if args.input is None or args.input == "-":
        lines = _hex_lines(sys.stdin)
    else:
        lines = _hex_lines([args.input])
    for number, protocol, data in lines:
        if isinstance(data, str):
            decoder.messages += 1
            decoder.failed += 1
            out.write("%d: %s\n" % (number, data))
            continue
        decoder.handle("%d" % number, args.proto or protocol or "asap", data)
    return decoder.close(err)


def _examples(args, out, err):
    from rserpool.tools.examples import lines

    for line in lines():
        out.write(line + "\n")
    return 0


def build_parser():
    """
    The command line parser of ``rserpool``.
    """
    parser = argparse.ArgumentParser(prog="rserpool", description="Reliable Server Pooling tools.")
    parser.add_argument("--version", action="version", version="rserpool " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser(
        "decode",
        help="pretty-print ASAP/ENRP messages given as hex or in a capture",
        description=(
            "Decode ASAP/ENRP messages. HEX is one message in hex; '-' (the default) reads "
            "stdin, one message per line, where a comment line '# asap ...' or '# enrp ...' "
            "sets the protocol of the lines after it. --pcap reads a pcap or pcapng file."
        ),
    )
    d.add_argument("input", nargs="?", metavar="HEX|-", help="a message in hex, or - for stdin")
    d.add_argument("--proto", choices=("asap", "enrp"), help="the protocol (default: asap, or as the capture says)")
    d.add_argument("--pcap", metavar="FILE", help="decode every ASAP/ENRP message of a capture")
    d.add_argument("--verify", action="store_true", help="re-encode each message and report differences (exit 1)")
    d.add_argument("-v", "--verbose", action="store_true", help="print every field")
    d.set_defaults(func=_decode)

    e = sub.add_parser("examples", help="print an example of every message type, in hex")
    e.set_defaults(func=_examples)
    return parser


def main(argv=None, out=None, err=None):
    """
    Run the ``rserpool`` command.

    @return: the exit status.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(err)
        return 2
    try:
        return args.func(args, out, err)
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
