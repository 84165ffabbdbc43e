"""
The suite's results and what is written from them, sans I/O: a JUnit XML
file, a Markdown table (requirement, level, result, detail), and a plain
text list of outcomes, one test a line, kept in a repository to notice
when an implementation's results change.

Outcomes:

 - C{pass}: the requirement is met;
 - C{fail}: a MUST (or MUST NOT) requirement is not met;
 - C{error}: the test could not check its requirement (a step it relies
   on failed, or a bug);
 - C{not-met}: a SHOULD, SHOULD NOT or MAY requirement the implementation
   does not meet (legitimately left out, or not);
 - C{skipped}: not configured, or not applicable to this target.
"""
import xml.etree.ElementTree as ElementTree

import attrs

from rserpool.conformance.requirements import Requirement, short_id

__all__ = [
    "Result",
    "OUTCOMES",
    "classify_skip",
    "junit_xml",
    "markdown",
    "outcomes_text",
    "parse_outcomes",
    "compare",
    "summary",
]

OUTCOMES = ("pass", "fail", "error", "not-met", "skipped")

#: Skip reasons that start with this mark a requirement not met
#: (rserpool.conformance.case.NOT_MET).
_NOT_MET = "not met"

_DETAIL = 240


def classify_skip(reason):
    """
    The outcome of a skipped test: C{"not-met"} for a SHOULD/MAY
    requirement the target does not meet, else C{"skipped"}.
    """
    return "not-met" if str(reason).startswith(_NOT_MET) else "skipped"


def _one_line(text, limit=_DETAIL):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@attrs.frozen
class Result:
    """
    The outcome of one test.

    @ivar test_id: the test's full id.
    @ivar requirement: its L{Requirement}.
    @ivar outcome: one of L{OUTCOMES}.
    @ivar detail: why, in one line (empty for a pass).
    @ivar duration: seconds.
    """

    test_id: str
    requirement: Requirement
    outcome: str = attrs.field(validator=attrs.validators.in_(OUTCOMES))
    detail: str = attrs.field(default="", converter=_one_line)
    duration: float = 0.0

    @property
    def label(self):
        """
        The outcome as the report shows it: C{not met (SHOULD)}, C{FAIL}...
        """
        if self.outcome == "not-met":
            return "not met (%s)" % self.requirement.level
        if self.outcome in ("fail", "error"):
            return self.outcome.upper()
        return self.outcome


def _order(results):
    return sorted(results, key=lambda r: (r.requirement.sort_key(), r.test_id))


def summary(results):
    """
    Counts by outcome: C{{"pass": 40, "fail": 0, ...}}.
    """
    counts = {o: 0 for o in OUTCOMES}
    for r in results:
        counts[r.outcome] += 1
    return counts


def junit_xml(results, name="rserpool.conformance", properties=()):
    """
    A JUnit XML document of C{results}: one C{testcase} per test, its
    requirement among its properties; a C{failure} for C{fail}, an
    C{error} for C{error}, C{skipped} for C{not-met} and C{skipped}.

    @param properties: C{(name, value)} pairs for the suite (the target).
    @rtype: L{bytes}
    """
    counts = summary(results)
    suite = ElementTree.Element("testsuite", {
        "name": name,
        "tests": str(len(results)),
        "failures": str(counts["fail"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["not-met"] + counts["skipped"]),
        "time": "%.3f" % sum(r.duration for r in results),
    })
    if properties:
        props = ElementTree.SubElement(suite, "properties")
        for key, value in properties:
            ElementTree.SubElement(props, "property", {"name": key, "value": str(value)})
    for r in results:
        classname, _, method = r.test_id.rpartition(".")
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": classname, "name": method, "time": "%.3f" % r.duration})
        props = ElementTree.SubElement(case, "properties")
        req = r.requirement
        for key, value in (("requirement", req.citation), ("level", req.level),
                           ("text", req.text), ("outcome", r.outcome)):
            ElementTree.SubElement(props, "property", {"name": key, "value": value})
        if r.outcome == "fail":
            ElementTree.SubElement(case, "failure", {"message": r.detail}).text = r.detail
        elif r.outcome == "error":
            ElementTree.SubElement(case, "error", {"message": r.detail}).text = r.detail
        elif r.outcome in ("not-met", "skipped"):
            ElementTree.SubElement(case, "skipped", {"message": r.label + ": " + r.detail})
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results, title="Conformance", target=()):
    """
    A Markdown report: what was tested, the counts, and one table row per
    test (requirement cited as C{RFC 5352 §3.1}, level, what it requires,
    result, detail), sorted by requirement.

    @param target: C{(name, value)} pairs describing the target.
    @rtype: L{str}
    """
    lines = ["# %s" % title, ""]
    for key, value in target:
        lines.append("- %s: `%s`" % (key, value))
    if target:
        lines.append("")
    counts = summary(results)
    lines.append(", ".join("%d %s" % (counts[o], o) for o in OUTCOMES))
    lines.append("")
    lines.append("| Requirement | Level | What | Test | Result | Detail |")
    lines.append("|---|---|---|---|---|---|")
    for r in _order(results):
        req = r.requirement
        lines.append("| %s | %s | %s | `%s` | %s | %s |" % (
            req.citation, req.level, _cell(req.text), short_id(r.test_id), r.label,
            _cell(r.detail)))
    return "\n".join(lines) + "\n"


def outcomes_text(results):
    """
    One line per test, C{"<short id> <outcome>"}, sorted: a known-results
    file.
    """
    return "".join("%s %s\n" % (short_id(r.test_id), r.outcome)
                   for r in sorted(results, key=lambda r: r.test_id))


def parse_outcomes(text):
    """
    A known-results file as a C{dict} of short test id to outcome; blank
    lines and C{#} comments are ignored.

    @raise ValueError: for a line that is not C{"<id> <outcome>"}.
    """
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in OUTCOMES:
            raise ValueError("line %d: expected '<test> <outcome>', not %r" % (number, line))
        out[parts[0]] = parts[1]
    return out


def compare(results, known):
    """
    The differences between C{results} and known outcomes.

    @param known: what L{parse_outcomes} returns.
    @return: a list of lines, empty when they agree.
    """
    now = {short_id(r.test_id): r for r in results}
    lines = []
    for test in sorted(set(now) | set(known)):
        was = known.get(test)
        result = now.get(test)
        if result is None:
            lines.append("%s: was %s, not run now" % (test, was))
        elif was is None:
            lines.append("%s: new, %s (%s)" % (test, result.outcome, result.detail))
        elif was != result.outcome:
            lines.append("%s: was %s, now %s (%s)" % (test, was, result.outcome, result.detail))
    return lines


_RST_LABELS = {"pass": "pass", "fail": "**FAIL**", "error": "error", "not-met": "not met",
               "skipped": "skipped"}


def _rst_text(text):
    # Inline markup characters taken literally.
    return str(text).replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`")


def rst_table(pairs, columns=()):
    """
    The requirement list as a reStructuredText list table, sorted by
    requirement, with one column of outcomes per C{columns} entry (what
    ``doc/conformance.rst`` shows side by side).

    @param pairs: C{(test id, Requirement)}, what
        L{rserpool.conformance.requirements.collect} returns.
    @param columns: C{(label, {short test id: outcome})} pairs.
    @rtype: L{str}
    """
    from rserpool.conformance.requirements import short_id

    headers = ["Requirement", "Level", "What", "Test"] + [label for label, _ in columns]
    lines = [".. list-table::", "   :header-rows: 1", ""]
    lines.append("   * - " + headers[0])
    lines.extend("     - " + h for h in headers[1:])
    for test_id, r in sorted(pairs, key=lambda p: (p[1].sort_key(), p[0])):
        short = short_id(test_id)
        cells = [r.citation, r.level, _rst_text(r.text), "``%s``" % short]
        for _, outcomes in columns:
            outcome = outcomes.get(short)
            cells.append(_RST_LABELS.get(outcome, "--") if outcome else "--")
        lines.append("   * - " + cells[0])
        lines.extend("     - " + c for c in cells[1:])
    return "\n".join(lines) + "\n"


def rst_settings(settings):
    """
    The target's settings as a reStructuredText list table.

    @param settings: L{rserpool.conformance.target.SETTINGS}.
    """
    lines = [".. list-table::", "   :header-rows: 1", "", "   * - Variable",
             "     - Default", "     - Meaning"]
    for name, (_, _, default, text) in settings.items():
        shown = "--" if default is None else "``%s``" % (default,)
        lines.append("   * - ``%s``" % name)
        lines.append("     - %s" % shown)
        lines.append("     - %s" % _rst_text(text))
    return "\n".join(lines) + "\n"
