#!/usr/bin/env python3
"""Checks a JUnit XML file the way CI systems read it.

    python3 testbed/check_junit.py FILE [--tests N] [--failures N]

Structure (xml.etree, against the Ant/Jenkins JUnit schema's rules): the root is <testsuites>
or <testsuite>; every <testsuite> has name, tests, failures, errors and time, with tests and
failures equal to its <testcase> and <failure> counts; every <testcase> has name, classname
and a numeric time; every <failure> has message and type. Then the `junitparser` package
(Debian's python3-junitparser, installed by scripts/install-deps) must load the file and
agree on the counts; without it the check fails rather than pass half-done. Prints "junit ok: N testcases, M failures" or each problem; exits 1 on a problem.
"""
import argparse
import sys
import xml.etree.ElementTree as ET


def check(path, want_tests=None, want_failures=None):
    problems = []
    root = ET.parse(path).getroot()
    if root.tag not in ("testsuites", "testsuite"):
        return [f"root element is <{root.tag}>, not <testsuites> or <testsuite>"], 0, 0
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        problems.append("no <testsuite>")
    total_cases = total_failures = 0
    for s in suites:
        for a in ("name", "tests", "failures", "errors", "time"):
            if a not in s.attrib:
                problems.append(f"<testsuite> lacks {a}")
        cases = s.findall("testcase")
        failures = [f for c in cases for f in c.findall("failure")]
        if s.get("tests") != str(len(cases)):
            problems.append(f"tests={s.get('tests')} but {len(cases)} <testcase>")
        if s.get("failures") != str(len(failures)):
            problems.append(f"failures={s.get('failures')} but {len(failures)} <failure>")
        for c in cases:
            for a in ("name", "classname", "time"):
                if a not in c.attrib:
                    problems.append(f"<testcase {c.get('name')}> lacks {a}")
            try:
                float(c.get("time", "x"))
            except ValueError:
                problems.append(f"<testcase {c.get('name')}> time is not a number: {c.get('time')}")
            for f in c.findall("failure"):
                for a in ("message", "type"):
                    if not f.get(a):
                        problems.append(f"<failure> in {c.get('name')} lacks {a}")
        total_cases += len(cases)
        total_failures += len(failures)
    if root.tag == "testsuites":
        for a, v in (("tests", total_cases), ("failures", total_failures)):
            if a in root.attrib and root.get(a) != str(v):
                problems.append(f"<testsuites {a}={root.get(a)}> but {v}")
    try:
        import junitparser
    except ImportError:
        junitparser = None
        problems.append("junitparser is not installed (apt-get install python3-junitparser; scripts/install-deps does)")
    if junitparser is not None:
        xml = junitparser.JUnitXml.fromfile(path)
        cases = [c for suite in (xml if isinstance(xml, junitparser.JUnitXml) else [xml]) for c in suite]
        failed = [c for c in cases if any(isinstance(r, junitparser.Failure) for r in c.result)]
        if len(cases) != total_cases or len(failed) != total_failures:
            problems.append(f"junitparser reads {len(cases)} cases, {len(failed)} failed")
    if want_tests is not None and total_cases != want_tests:
        problems.append(f"{total_cases} testcases, expected {want_tests}")
    if want_failures is not None and total_failures != want_failures:
        problems.append(f"{total_failures} failures, expected {want_failures}")
    return problems, total_cases, total_failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--tests", type=int)
    ap.add_argument("--failures", type=int)
    args = ap.parse_args()
    try:
        problems, cases, failures = check(args.file, args.tests, args.failures)
    except ET.ParseError as e:
        problems, cases, failures = [f"not XML: {e}"], 0, 0
    for p in problems:
        print(f"junit problem: {p}")
    if problems:
        return 1
    try:
        import junitparser  # noqa: F401
        how = "xml.etree and junitparser"
    except ImportError:
        how = "xml.etree; junitparser not installed"
    print(f"junit ok: {cases} testcases, {failures} failures ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
