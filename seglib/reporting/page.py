"""The report page: self-contained HTML with the charts inlined (no network needed to open it)."""

from __future__ import annotations

import base64
import datetime as dt
import html

from pyspark.sql import Row

from seglib.reporting.charts import _palette

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2433;background:#f6f7fb}
h1{margin:0 0 4px}h2{margin-top:28px}.muted{color:#5b6475}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:14px}
.card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 3px rgba(0,0,0,.12);border-top:6px solid var(--c)}
.card h3{margin:0 0 4px}.card .numbers{font-size:13px;color:#5b6475;margin-bottom:8px}
.card ul{padding-left:18px;margin:4px 0}.card li{font-size:13px;margin:2px 0}
.action{background:#eef6ee;border-radius:6px;padding:6px 8px;font-size:13px}
figure{background:#fff;border-radius:10px;padding:10px;margin:10px 0;box-shadow:0 1px 3px rgba(0,0,0,.12)}
figure img{max-width:100%}table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #d9dde7;padding:4px 8px;text-align:right}th{background:#eef0f6}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:8px 12px}
"""


def _image(name: str, payload: bytes, caption: str) -> str:
    encoded = base64.b64encode(payload).decode("ascii")
    return (
        f'<figure id="{name}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption class=muted>{html.escape(caption)}</figcaption></figure>"
    )


def _color(index: int, count: int) -> str:
    import matplotlib.colors

    return str(matplotlib.colors.to_hex(_palette(count)[index]))


def render_html(
    snapshot: dt.date,
    segmentation_snapshot: dt.date,
    customers: int,
    run: Row,
    catalog: list[Row],
    charts: dict[str, tuple[bytes, str]],
    drift: list[Row],
    value_horizon_days: int | None = None,
) -> str:
    """One self-contained page: the run's summary, a card per segment, drift warnings, the charts inlined.
    `value_horizon_days`: the horizon of the catalog's lifetime value columns (None: no lifetime value)."""
    e = html.escape
    cards = "".join(
        _segment_card(row, index, len(catalog), value_horizon_days) for index, row in enumerate(catalog)
    )
    previous = (
        f"Agreement with snapshot {run['previous_snapshot']}: adjusted Rand index {run['ari_with_previous']:.3f} "
        f"({run['kept_segments']} segments kept, {run['new_segments']} new, matched on {e(run['matching_basis'])})."
        if run["previous_snapshot"] is not None and run["ari_with_previous"] is not None
        else "First segmentation of this data (no earlier snapshot to compare with)."
    )
    figures = "".join(_image(name, payload, caption) for name, (payload, caption) in charts.items())
    scored = (
        ""
        if segmentation_snapshot == snapshot
        else f"<p><b>{customers:,} customers scored with the segmentation trained on snapshot "
        f"{segmentation_snapshot}</b>; segment cards show that training run's profiles.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Customer segments {snapshot}</title>
<style>{STYLE}</style></head><body>
<h1>Customer segments &middot; snapshot {snapshot}</h1>
{scored}
<p class="muted">Model {e(run["model_version"])} &middot; {e(run["algorithm"])} with k = {run["k"]}
({e(run["selection_reason"])}) &middot; silhouette {run["silhouette"]:.3f} &middot; surrogate tree fidelity
{run["surrogate_fidelity"]:.1%} &middot; {run["customers"]:,} customers, {run["novel_customers"]:,} novel.</p>
<p>{previous}</p>
<h2>Segments</h2><div class="grid" id="segments">{cards}</div>
{_drift_section(drift)}
<h2>Charts</h2>{figures}
</body></html>
"""


def _value_line(row: Row, horizon_days: int | None) -> str:
    fields = row.asDict()
    spend, purchases = fields.get("expected_spend"), fields.get("expected_purchases")
    if horizon_days is None or spend is None or purchases is None:
        return ""
    alive = fields.get("mean_probability_alive")
    active = f" &middot; {alive:.0%} of its buyers likely still active" if alive is not None else ""
    return (
        f'<div class="numbers">next {horizon_days} days (BG/NBD, Gamma-Gamma): {purchases:,.0f} purchases, '
        f"{spend:,.0f} spend ({spend / max(row['segment_size'], 1):,.2f} per customer){active}</div>"
    )


def _segment_card(row: Row, index: int, count: int, value_horizon_days: int | None = None) -> str:
    e = html.escape
    rule = row.asDict().get("naming_rule")
    named_by = (
        f"named by rule <code>{e(rule)}</code>" if rule else "no naming rule fits: named by its features"
    )
    identity = (
        "new segment"
        if row["previous_similarity"] is None
        else f"same segment as last run (overlap {row['previous_similarity']:.2f})"
    )
    features = "".join(f"<li>{e(text)}</li>" for text in row["top_features"]) or "<li>none stands out</li>"
    rules = "".join(f"<li>{e(text)}</li>" for text in row["surrogate_rules"]) or "<li>-</li>"
    return (
        f'<div class="card" style="--c:{_color(index, count)}" data-segment="{row["segment_id"]}">'
        f"<h3>{e(row['segment_name'])}</h3>"
        f'<div class="numbers">segment {row["segment_id"]} &middot; {row["segment_size"]:,} customers '
        f"&middot; {row['segment_share']:.1%} &middot; {e(identity)} &middot; {named_by}</div>"
        f"{_value_line(row, value_horizon_days)}"
        f"<p>{e(row['description'])}</p><div class=action><b>Action:</b> {e(row['action'])}</div>"
        f"<p><b>Stands out on</b></p><ul>{features}</ul><p><b>Rules (decision tree)</b></p><ul>{rules}</ul></div>"
    )


def _drift_section(drift: list[Row]) -> str:
    if not drift:
        return ""
    warnings = [row for row in drift if row["warning"]]
    listed = "".join(
        f"<li>{html.escape(row['metric'])} {html.escape(row['name'])}: {row['value']:.3f} "
        f"(threshold {row['threshold']})</li>"
        for row in warnings
    )
    return "<h2>Drift since training</h2>" + (
        f'<div class="warn">Retraining recommended:<ul>{listed}</ul></div>'
        if warnings
        else "<p>No drift beyond the thresholds.</p>"
    )
