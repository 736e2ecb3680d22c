"""The artifact check's answer as one JSON object: printed on stdout and written as the Job's
termination message, which the kubelet truncates at 4096 bytes, so `termination_message` keeps
it under that by dropping the last failures (and saying how many) rather than cutting JSON.

    {"check": "artifact", "verdict": "Pass" | "Fail" | "Error",
     "target": "s3://…", "baseline": "s3://…",
     "reasons": ["config.json: quantization_config.bits is 8, the spec says int4 (…)"],
     "failures": [{"file": "config.json", "field": "quantization_config.bits", "side": "target"}],
     "omitted": 0, "facts": {"shards": 2, "weightsBytes": …, "estimateBytes": …}}

Pure."""

from __future__ import annotations

import json
from typing import Any

from quantrollout.preflight.artifact import Report

TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of /dev/termination-log
EXIT_CODES = {"Pass": 0, "Fail": 1, "Error": 3}  # 2 is argparse's usage error


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


def termination_message(doc: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """Compact JSON of at most `limit` UTF-8 bytes; the first reasons are kept whole."""
    doc = {**doc, "omitted": 0}
    reasons, failures = list(doc["reasons"]), list(doc["failures"])
    while True:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= limit:
            return text
        if len(reasons) > 1:
            reasons.pop()
            failures = failures[: len(reasons)]
            doc.update(reasons=reasons, failures=failures, omitted=doc["omitted"] + 1)
        elif reasons and len(reasons[0]) > 200:
            reasons[0] = reasons[0][:200] + "…"
            doc["reasons"] = reasons
        else:  # facts or locations too long: drop the facts, then shorten the locations
            if "facts" in doc:
                del doc["facts"]
            else:
                doc.update(target=doc["target"][:500], baseline=(doc["baseline"] or "")[:500])
                if len(json.dumps(doc).encode()) > limit:
                    return json.dumps({"check": doc["check"], "verdict": doc["verdict"]})
