"""Reports of budget checks: JUnit XML (CI shows one testcase per device x artifact x metric) and Markdown."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from edgecompress.bench.budget import Check, fmt


def junit_xml(checks: Sequence[Check], suite: str = "edgecompress.bench") -> str:
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(checks)),
                       failures=str(sum(c.status == "fail" for c in checks)),
                       errors=str(sum(c.status == "error" for c in checks)),
                       skipped=str(sum(c.status == "skipped" for c in checks)))
    for c in checks:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{c.device}.{c.artifact}", name=c.metric)
        if c.status == "fail":
            ET.SubElement(tc, "failure", message=c.message, type=f"{c.kind}_missed").text = c.message
        elif c.status == "error":
            ET.SubElement(tc, "error", message=c.message, type="device_failure").text = c.message
        elif c.status == "skipped":
            ET.SubElement(tc, "skipped", message=c.message)
        else:
            ET.SubElement(tc, "system-out").text = c.message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(checks: Sequence[Check], path: Path, suite: str = "edgecompress.bench") -> None:
    Path(path).write_text(junit_xml(checks, suite))


def _cell(v) -> str:
    return "–" if v is None else fmt(v) if isinstance(v, (int, float)) else str(v)


def markdown_summary(doc: dict, checks: Sequence[Check]) -> str:
    """A results table per device/artifact and the list of misses, for a PR comment or CI job summary."""
    lines = [f"## edgecompress bench: profile `{doc.get('profile', '?')}`", ""]
    cols = ("device", "artifact", "p50_ms", "p90_ms", "p99_ms", "load_ms", "peak_rss_mb", "file_mb", "runtime", "threads")
    lines += ["| " + " | ".join(cols) + " | status |", "|" + "---|" * (len(cols) + 1)]
    by_row: dict[tuple, list[Check]] = {}
    for c in checks:
        by_row.setdefault((c.device, c.artifact), []).append(c)
    for r in doc.get("results", []):
        row_checks = by_row.get((r.get("device"), r.get("artifact")), [])
        if not r.get("ok"):
            status = "device failure"
        elif any(c.status == "fail" for c in row_checks):
            status = "budget missed"
        else:
            status = "ok"
        cells = [_cell(r.get(k)) for k in cols]
        if r.get("emulated"):  # qemu-arm64: mark every latency so nobody reads it as a device measurement
            cells = [f"{c} (emulated)" if k.endswith("_ms") and c != "–" else c for k, c in zip(cols, cells)]
            cells[0] += f" (**emulated** {r.get('machine', '')}, {r.get('emulator', 'qemu')})"
        lines.append("| " + " | ".join(cells) + f" | {status} |")
    if any(r.get("emulated") for r in doc.get("results", [])):
        lines += ["", "**Emulated** rows ran under qemu-user on the CI host: their latency, load time and RSS are "
                  "not device figures (and their budgets are not checked); outputs and labels are."]
    n_bad = sum(c.status in ("fail", "error") for c in checks)
    lines += ["", f"**{n_bad} of {len(checks)} checks failed**" if n_bad else f"All {len(checks)} checks passed.", ""]
    lines += [f"- {c.message}" for c in checks if c.status == "fail"]
    # A device failure once per row, not once per budgeted metric.
    lines += [f"- device failure ({r.get('device')}, {r.get('artifact')}): {r.get('error')}"
              for r in doc.get("results", []) if not r.get("ok")]
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(doc: dict, checks: Sequence[Check], path: Path) -> None:
    Path(path).write_text(markdown_summary(doc, checks))
