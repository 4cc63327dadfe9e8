"""The gate verdict as JUnit XML (one testcase per check), for CI test reporters."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from ..gates import Verdict
from .sections import bound_text, value_text


def xml_text(text) -> str:
    """``text`` with every character XML 1.0 forbids (control characters other than tab, line
    feed and carriage return, lone surrogates, U+FFFE/U+FFFF) written visibly as ``\\xNN`` /
    ``\\uNNNN``; ElementTree escapes the rest (``<``, ``&``, quotes)."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or 0x10000 <= o <= 0x10FFFF:
            out.append(ch)
        else:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
    return "".join(out)


def verdict_junit(verdict: Verdict) -> str:
    """JUnit XML: one ``<testcase>`` per check; a failed check is a ``<failure>``, a check that
    could not be evaluated an ``<error>``. Every attribute and text passes :func:`xml_text`."""
    verdict = _xml_safe_verdict(verdict)
    suites = ET.Element("testsuites", name="lcnn-audit gate", tests=str(len(verdict.checks)),
                        failures=str(verdict.count("fail")), errors=str(verdict.count("error")),
                        time=f"{verdict.seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=verdict.name, tests=str(len(verdict.checks)),
                          failures=str(verdict.count("fail")), errors=str(verdict.count("error")),
                          skipped=str(verdict.count("skip")),
                          time=f"{verdict.seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for k, v in (("policy", verdict.policy), ("lcnn_audit_version", verdict.lcnn_audit_version),
                 *((f"source.{a}", s) for a, s in verdict.sources.items())):
        ET.SubElement(props, "property", name=k, value=str(v))
    for c in verdict.checks:
        case = ET.SubElement(suite, "testcase", classname=f"lcnn_audit.gate.{c.audit}", name=c.name, time="0")
        detail = (f"metric: {c.metric}\nvalue: {value_text(c)}\nbound: {bound_text(c)}\n"
                  f"policy: {verdict.policy} {c.path}")
        if c.status == "fail":
            ET.SubElement(case, "failure", message=c.message, type="ThresholdFailed").text = detail
        elif c.status == "error":
            ET.SubElement(case, "error", message=c.message, type="PolicyError").text = detail
        elif c.status == "skip":
            ET.SubElement(case, "skipped", message=c.message)
        ET.SubElement(case, "system-out").text = f"{c.message}\n{detail}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _xml_safe_verdict(verdict: Verdict) -> Verdict:
    """The verdict with every string that reaches the XML passed through :func:`xml_text`."""
    def fix(v):
        return xml_text(v) if isinstance(v, str) else v

    checks = tuple(dataclasses.replace(c, **{f.name: fix(getattr(c, f.name)) for f in dataclasses.fields(c)
                                            if f.name not in ("status", "op", "interval")})
                   for c in verdict.checks)
    return dataclasses.replace(verdict, policy=fix(verdict.policy), name=fix(verdict.name), checks=checks,
                               sources={fix(k): fix(v) for k, v in verdict.sources.items()},
                               notices=tuple(fix(n) for n in verdict.notices),
                               lcnn_audit_version=fix(verdict.lcnn_audit_version))
