"""
C{python -m rserpool.conformance ...}: C{rserpool conformance ...}.
"""
import sys

from rserpool.conformance.runner import main

sys.exit(main())
