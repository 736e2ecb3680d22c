"""The preflight checks' answers as JSON objects: printed on stdout and written as the Job's
termination message, which the kubelet truncates at 4096 bytes, so `termination_message` keeps
it under that by dropping the last failures (and saying how many) rather than cutting JSON.

The artifact check's:

    {"check": "artifact", "verdict": "Pass" | "Fail" | "Error",
     "target": "s3://…", "baseline": "s3://…",
     "reasons": ["config.json: quantization_config.bits is 8, the spec says int4 (…)"],
     "failures": [{"file": "config.json", "field": "quantization_config.bits", "side": "target"}],
     "omitted": 0, "facts": {"shards": 2, "weightsBytes": …, "estimateBytes": …}}

The gate's (`gate_result`): the same verdict, reasons and failures (one per rule that did not
pass, with its field, value and threshold), and in `facts` every verdict, both tiers' figures
and the probe's scores.

Pure."""

from __future__ import annotations

import json
from typing import Any

from quantrollout.preflight.artifact import Report
from quantrollout.preflight.gate import GateVerdict, Measured, as_mapping, overall
from quantrollout.preflight.probe import ProbeResult

TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of /dev/termination-log
# 2 is argparse's usage error; Error (could not check) and Inconclusive (nothing to judge) both
# leave the target without a verdict, and so without traffic.
EXIT_CODES = {"Pass": 0, "Fail": 1, "Error": 3, "Inconclusive": 3}


def artifact_result(
    target: str, baseline: str | None, report: Report | None, error: str | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"check": "artifact", "target": target, "baseline": baseline}
    if report is None:
        doc.update(verdict="Error", reasons=[error or "the check could not be made"], failures=[])
        return doc
    doc.update(
        verdict="Pass" if report.passed else "Fail",
        reasons=[str(f) for f in report.failures],
        failures=[{"file": f.file, "field": f.field, "side": f.side} for f in report.failures],
        facts=report.facts,
    )
    return doc


def gate_result(
    verdicts: list[GateVerdict], measured: Measured, probe: list[ProbeResult]
) -> dict[str, Any]:
    outcome = overall(verdicts)
    misses = [v for v in verdicts if v.outcome != "Pass"]
    facts: dict[str, Any] = {
        "verdicts": [as_mapping(v) for v in verdicts],
        "baseline": measured.baseline.to_dict(),
        "target": measured.target.to_dict(),
    }
    if probe:
        worst = sorted(
            (r for r in probe if r.agreement is not None), key=lambda r: r.agreement or 0
        )
        facts["probe"] = {
            "prompts": len(probe),
            "agreement": measured.agreement,
            "exactMatch": measured.exact_match,
            "leastAgreeing": [r.id for r in worst[:5] if not r.exact],
        }
    return {
        "check": "gate",
        "verdict": outcome,
        "reasons": [v.describe() for v in misses],
        "failures": [as_mapping(v) for v in misses],
        "facts": facts,
    }


def termination_message(doc: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """Compact JSON of at most `limit` UTF-8 bytes. What goes first when it is longer: the facts
    (figures), then the last reasons (counted in `omitted`); the first reason is kept whole if it
    can be, else its start."""
    doc = {**doc, "omitted": 0}
    reasons, failures = list(doc["reasons"]), list(doc["failures"])
    while True:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= limit:
            return text
        if "facts" in doc:
            del doc["facts"]
        elif len(reasons) > 1:
            reasons.pop()
            failures = failures[: len(reasons)]
            doc.update(reasons=reasons, failures=failures, omitted=doc["omitted"] + 1)
        elif reasons and len(reasons[0]) > 200:
            reasons[0] = reasons[0][:200] + "…"
            doc["reasons"] = reasons
        else:  # the locations alone are too long: the verdict and the first reason's start
            short = {"check": doc["check"], "verdict": doc["verdict"], "reasons": reasons[:1]}
            return json.dumps(short, separators=(",", ":"), ensure_ascii=False)
