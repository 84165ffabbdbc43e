"""
The requirement registry: every test of the suite names the requirement it
checks on the first line of its docstring, in one parseable form::

    RFC 5352 §3.1 MUST: a registrar answers a valid Registration with a
    Registration Response that accepts it.

that is ``RFC <number> §<section> <level>: <our words>``, where the level
is one of RFC 2119's MUST, MUST NOT, SHOULD, SHOULD NOT, MAY.  The words
may run on over the following lines up to the first blank line; what comes
after that describes how the test observes it.

Sans I/O: L{parse} turns a docstring into a L{Requirement}; L{collect}
walks test classes.  A test without a parseable requirement is a bug of
the suite, and L{parse} says so.
"""
import inspect
import re

import attrs

__all__ = [
    "Requirement",
    "RequirementError",
    "MANDATORY",
    "LEVELS",
    "parse",
    "collect",
    "format_list",
]

#: RFC 2119 levels, strongest first.
LEVELS = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY")
#: Levels whose tests fail when unmet; the others report "not met".
MANDATORY = ("MUST", "MUST NOT")

_FIRST = re.compile(
    r"^\s*(?P<rfc>RFC \d{4})\s+§(?P<section>\d+(?:\.\d+)*)\s+"
    r"(?P<level>MUST NOT|MUST|SHOULD NOT|SHOULD|MAY):\s*(?P<text>.*\S)\s*$"
)


class RequirementError(ValueError):
    """
    A docstring does not name a requirement in the suite's form.
    """


@attrs.frozen
class Requirement:
    """
    One requirement of an RFC, as a test checks it.

    @ivar rfc: C{"RFC 5352"}.
    @ivar section: C{"3.1"}.
    @ivar level: one of L{LEVELS}.
    @ivar text: the requirement in one line (our words, not the RFC's).
    """

    rfc: str
    section: str
    level: str
    text: str

    @property
    def citation(self):
        """
        C{"RFC 5352 §3.1"}.
        """
        return "%s §%s" % (self.rfc, self.section)

    @property
    def mandatory(self):
        """
        Whether an implementation that does not meet it fails.
        """
        return self.level in MANDATORY

    def sort_key(self):
        return (self.rfc, tuple(int(p) for p in self.section.split(".")), LEVELS.index(self.level))

    def __str__(self):
        return "%s %s: %s" % (self.citation, self.level, self.text)


def parse(docstring, where="a test"):
    """
    The requirement the first paragraph of C{docstring} names.

    @param where: what the docstring belongs to, for the error.
    @rtype: L{Requirement}
    @raise RequirementError: if it names none.
    """
    if not docstring:
        raise RequirementError("%s has no docstring naming its requirement" % (where,))
    lines = inspect.cleandoc(docstring).splitlines()
    paragraph = []
    for line in lines:
        if not line.strip():
            if paragraph:
                break
            continue
        paragraph.append(line.strip())
    match = _FIRST.match(" ".join(paragraph))
    if match is None:
        raise RequirementError(
            "%s: the docstring's first paragraph must read 'RFC NNNN §S.S LEVEL: text', "
            "not %r" % (where, " ".join(paragraph)[:80]))
    return Requirement(match.group("rfc"), match.group("section"), match.group("level"),
                       match.group("text"))


def _tests(suite):
    # Flatten a unittest/trial suite into its test cases.
    try:
        items = list(suite)
    except TypeError:
        yield suite
        return
    for item in items:
        yield from _tests(item)


def collect(suite):
    """
    The requirements of every test of C{suite}, as C{(test id,
    Requirement)} pairs in the suite's order.

    @param suite: a trial or unittest suite (or an iterable of tests).
    """
    out = []
    for test in _tests(suite):
        method = getattr(type(test), getattr(test, "_testMethodName", ""), None)
        requirement = getattr(method, "requirement", None)
        if requirement is None:
            requirement = parse(getattr(method, "__doc__", None), test.id())
        out.append((test.id(), requirement))
    return out


def format_list(pairs, markdown=False):
    """
    The requirement list as text: one line per test, sorted by RFC and
    section (or a Markdown table).

    @param pairs: what L{collect} returns.
    @rtype: L{str}
    """
    pairs = sorted(pairs, key=lambda p: (p[1].sort_key(), p[0]))
    lines = []
    if markdown:
        lines.append("| Requirement | Level | What | Test |")
        lines.append("|---|---|---|---|")
        for test_id, r in pairs:
            lines.append("| %s | %s | %s | `%s` |" % (
                r.citation, r.level, r.text.replace("|", "\\|"), short_id(test_id)))
    else:
        for test_id, r in pairs:
            lines.append("%-16s %-10s %s\n%18s%s" % (r.citation, r.level, r.text, "",
                                                      short_id(test_id)))
    return "\n".join(lines) + "\n"


def short_id(test_id):
    """
    A test id without the package: C{test_asap.Registration.test_new}.
    """
    prefix = "rserpool.conformance."
    return test_id[len(prefix):] if test_id.startswith(prefix) else test_id
