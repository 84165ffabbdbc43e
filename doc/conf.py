"""Sphinx configuration for the rserpool documentation."""
import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "rserpool"
author = "rserpool developers"
copyright = "2026, rserpool developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
exclude_patterns = ["_build", "perf/*"]
html_theme = "alabaster"

# The code's docstrings are in Twisted's epytext style (@param, C{...},
# L{...}), as the project's style guide asks.  Translate them to reST field
# lists and roles for autodoc, so Sphinx renders them and warns about
# nothing.
_FIELD = re.compile(r"^(\s*)@(param|ivar|cvar|var|type|return|returns|rtype|raise|raises|see|note)\b\s*([^:]*):\s?(.*)$")
_INLINE = [
    # a literal directly followed by a letter (``L{PE}s``) needs an escaped
    # space in reST
    (re.compile(r"[CL]\{([^{}]*)\}(?=\w)"), r"``\1``\\ "),
    (re.compile(r"C\{([^{}]*)\}"), r"``\1``"),
    (re.compile(r"L\{([^{}]*)\}"), r"``\1``"),
    (re.compile(r"I\{([^{}]*)\}"), r"*\1*"),
    (re.compile(r"B\{([^{}]*)\}"), r"**\1**"),
    (re.compile(r"U\{([^{}]*)\}"), r"\1"),
]
_NAMES = {"returns": "return", "raises": "raise", "see": "note"}


def _epytext_to_rest(app, what, name, obj, options, lines):
    out = []
    in_field = False
    for line in lines:
        for pattern, repl in _INLINE:
            line = pattern.sub(repl, line)
        m = _FIELD.match(line)
        if m:
            indent, field, arg, text = m.groups()
            field = _NAMES.get(field, field)
            if not in_field and out and out[-1].strip():
                out.append("")
            if field == "note":
                out.append("%s:note: %s" % (indent, text))
            else:
                out.append("%s:%s%s: %s" % (indent, field, (" " + arg.strip()) if arg.strip() else "", text))
            in_field = True
        elif in_field and line.strip():
            # continuation of a field: join it to the field's line
            out[-1] = out[-1] + " " + line.strip()
        else:
            in_field = False if not line.strip() else in_field
            out.append(line)
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", _epytext_to_rest)
