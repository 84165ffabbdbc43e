"""Sphinx configuration for the rserpool documentation."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "rserpool"
author = "rserpool developers"
copyright = "2026, rserpool developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
exclude_patterns = ["_build", "perf/*"]
html_theme = "alabaster"
nitpicky = False
