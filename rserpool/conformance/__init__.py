"""
A conformance suite for RSerPool implementations: trial test cases that
test any registrar (its ASAP and ENRP sides) and any pool element over the
wire, as an independent peer would, each naming the requirement of RFC
5352, 5353, 5354, 5355 or 5356 it checks.

The implementation under test is given by the environment
(L{rserpool.conformance.target})::

    RSERPOOL_TARGET_ASAP=tcp:host=127.0.0.1:port=3863 \\
        python -m twisted.trial rserpool.conformance

or through the wrapper, which also writes a JUnit XML file and a Markdown
table (L{rserpool.conformance.runner})::

    rserpool conformance --asap tcp:host=127.0.0.1:port=3863 --report report.md

C{rserpool conformance --list} prints the requirements.  ``doc/conformance.rst``
says how to test your own registrar or PE.

Modules: L{target} (the environment), L{requirements} (the registry),
L{client} (the wire client, on L{rserpool.wire} and
L{rserpool.transport} only), L{peer} (the suite as an ENRP peer of the
target), L{harness} (the suite as the registrars of a PE under test),
L{case} (the tests' base class), L{stats}, L{report}, L{runner}; the
tests are in C{test_asap}, C{test_enrp}, C{test_pe} and C{test_pu} (a
pool user, the harness its registrar).
"""
