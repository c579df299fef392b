"""``--junit-xml``: the gate as a JUnit report, for CI systems that show test results (GitLab's
``artifacts:reports:junit``, Jenkins, GitHub test reporters).

One test suite per run (``evalloss``), one test case per gate rule, named by the rule; a failed
rule carries a ``<failure>`` with the rule's detail; the verdict line goes to ``system-out``.
Without a gate the suite has no test case.
"""

from __future__ import annotations

from xml.etree import ElementTree

from evalloss.render.cells import displayable, verdict
from evalloss.report import Report


def render(report: Report) -> str:
    shown = displayable(report)
    checks = () if report.gate is None else report.gate.checks
    failures = sum(not c.passed for c in checks)
    suites = ElementTree.Element("testsuites", tests=str(len(checks)), failures=str(failures))
    suite = ElementTree.SubElement(
        suites, "testsuite", name="evalloss", tests=str(len(checks)), failures=str(failures),
        errors="0", skipped="0", time=f"{sum(m.seconds for m in report.models):.3f}",
    )  # fmt: skip
    for check in checks:
        case = ElementTree.SubElement(
            suite, "testcase", classname=f"evalloss.gate.{report.loss}", name=check.rule
        )
        if not check.passed:
            failure = ElementTree.SubElement(case, "failure", message=check.detail, type="gate")
            failure.text = check.detail
    line = verdict(shown)
    if line:
        ElementTree.SubElement(suite, "system-out").text = line
    ElementTree.indent(suites)
    body = ElementTree.tostring(suites, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
