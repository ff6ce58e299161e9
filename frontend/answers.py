"""A query's answer (the dict ``run_query`` / ``reopen_release`` return, the API's JSON) laid out for
pages: the table rows, the chart's series and the CSV export. Pure layout: no figure is recomputed."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

REGION_LABELS = {"other": "other (coarsened)", "unknown": "no region"}


def region_label(region: str | None) -> str:
    return "all regions" if region is None else REGION_LABELS.get(region, region)


def _floats(row) -> list:
    return row.tolist() if hasattr(row, "tolist") else list(row)


def cells(answer: dict) -> list[dict]:
    """The answer's cells with plain lists and their labels."""
    out = []
    for cell in answer["data"]:
        out.append({"day": cell.get("day"), "region": cell.get("region"), "label": region_label(cell.get("region")),
                     "reports": int(cell["reports"]), "counts": _floats(cell["counts"]),
                     "unbiased": _floats(cell["unbiased"]), "ci_low": _floats(cell["ci_low"]),
                     "ci_high": _floats(cell["ci_high"])})
    return out


def table_rows(answer: dict) -> list[dict]:
    """One row per cell and value, in release order."""
    rows = []
    for cell in cells(answer):
        for i, value in enumerate(answer["values"]):
            rows.append({"day": cell["day"], "region": cell["region"], "region_label": cell["label"], "value": value,
                         "reports": cell["reports"], "count": cell["counts"][i], "unbiased": cell["unbiased"][i],
                         "ci_low": cell["ci_low"][i], "ci_high": cell["ci_high"][i]})
    return rows


BANDED_SERIES = 2


def chart_data(answer: dict) -> dict:
    """What answer-chart.js draws: bars of each value (one series per region) for one day or a
    window's total; lines over days (one series per region) for a query grouped by day."""
    query = answer["release"]["query"]
    all_cells = cells(answer)
    days = sorted({cell["day"] for cell in all_cells if cell["day"] is not None})
    series = len({cell["label"] for cell in all_cells})
    kind = "line" if len(days) > 1 else "bar"
    return {
        "values": answer["values"],
        "days": days,
        "kind": kind,
        # lines of one or two series carry confidence bands; more lines, and bars, carry whiskers
        "marks": "bands" if kind == "line" and series <= BANDED_SERIES else "whiskers",
        "confidence": answer["presentation"]["confidence"],
        "metric": query["metric"],
        "cells": [{key: cell[key] for key in ("day", "region", "label", "unbiased", "ci_low", "ci_high")}
                  for cell in all_cells],
    }


def mechanism(release) -> str:
    """The release's noise, in words, from what it stored (its scales and sensitivity)."""
    text = f"discrete Laplace on the counts (sensitivity {release.sensitivity}, scale {release.noise_scale})"
    if release.selection_scale is not None:
        text += f"; discrete Laplace on each region's report count to select the regions shown (scale {release.selection_scale})"
    return text


def privacy_facts(answer: dict, release) -> dict:
    privacy, query = answer["privacy"], answer["release"]["query"]
    return {**privacy, "mechanism": mechanism(release), "query": query, "release_id": answer["release"]["id"],
            "created_at": answer["release"]["created_at"], "data_version": answer["release"]["data_version"],
            "confidence": answer["presentation"]["confidence"], "simultaneous": answer["presentation"]["simultaneous"]}


def _cell_text(text: str) -> str:
    """A label as a spreadsheet shows it, never as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


CSV_COLUMNS = ["day", "region", "value", "reports", "count", "unbiased", "ci_low", "ci_high"]


def csv_text(answer: dict, release, now: datetime | None = None) -> str:
    """The table as CSV, after ``# key: value`` header lines with the answer's privacy metadata."""
    facts = privacy_facts(answer, release)
    query = facts["query"]
    header = [
        ("privtel release", facts["release_id"]),
        ("metric", f"{query['metric']} v{query['version']}"),
        ("window", f"{query['start']} to {query['end']} (UTC days)"),
        ("group_by", ",".join(query["group_by"]) or "none"),
        ("epsilon", facts["epsilon"]),
        ("delta", facts["delta"]),
        ("mechanism", facts["mechanism"]),
        ("differential_privacy", str(facts["differential_privacy"]).lower()),
        ("ldp_corrected", str(facts["ldp_corrected"]).lower()),
        ("confidence", f"{facts['confidence']} (simultaneous: {str(facts['simultaneous']).lower()})"),
        ("data_version", facts["data_version"] or ""),
        ("released_at", facts["created_at"]),
        ("exported_at", (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")),
        ("cost", "free: an export re-renders the stored release"),
        ("columns", "reports = the cell's noisy report count; count = consistent estimate; unbiased = debiased "
                    "estimate; ci_low/ci_high = interval around unbiased"),
    ]
    out = io.StringIO()
    for key, value in header:
        out.write(f"# {key}: {value}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in table_rows(answer):
        writer.writerow([row["day"] or "", _cell_text(row["region"] or ""), _cell_text(row["value"]), row["reports"], row["count"],
                         row["unbiased"], row["ci_low"], row["ci_high"]])
    return out.getvalue()
