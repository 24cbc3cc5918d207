"""`seg report`: one self-contained HTML file per snapshot (charts inlined, no network needed to open
it) and the same charts as PNG files beside it for slides."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Row, SparkSession

from seglib import store
from seglib.cluster import CATALOG_TABLE, PROFILES_TABLE, RUNS_TABLE, SEGMENTS_TABLE, SELECTION_TABLE
from seglib.config import SeglibConfig
from seglib.embed import EMBEDDING_COLUMN, EMBEDDINGS_TABLE
from seglib.errors import InputDataError
from seglib.paths import join_uri, parent_uri, resolve_uri
from seglib.score import DRIFT_TABLE
from seglib.warehouse import Warehouse

log = logging.getLogger(__name__)

HEATMAP_FEATURES = 14


@dataclass(frozen=True)
class ReportResult:
    location: str  # the report.html URI
    charts: list[str]  # PNG URIs

    def format(self) -> str:
        return f"report written to {self.location} ({len(self.charts)} charts beside it as PNG)"


def report_folder(config: SeglibConfig, snapshot: dt.date) -> str:
    """report.directory, else a `reports` folder beside model_dir; one sub-folder per snapshot."""
    if config.report.directory is not None:
        root = resolve_uri(config.report.directory)
    else:
        # parent_uri: a model_dir at a bucket root (s3a://bucket) keeps its reports in that bucket.
        root = join_uri(parent_uri(resolve_uri(config.storage.model_dir)), "reports")
    return join_uri(root, snapshot.isoformat())


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _palette(count: int) -> list[Any]:
    import matplotlib

    colors = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [colors(index % colors.N) for index in range(count)]


def sizes_chart(catalog: list[Row]) -> bytes:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 0.5 * len(catalog) + 1.2))
    labels = [f"{row['segment_id']}: {row['segment_name']}" for row in catalog]
    shares = [100 * row["segment_share"] for row in catalog]
    axes.barh(labels[::-1], shares[::-1], color=_palette(len(catalog))[::-1])
    for y, share in enumerate(shares[::-1]):
        axes.text(share, y, f" {share:.1f}%", va="center", fontsize=9)
    axes.set_xlabel("share of customers (%)")
    axes.set_title("Segment sizes")
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def lift_heatmap(catalog: list[Row], profiles: list[Row]) -> bytes:
    import matplotlib.pyplot as plt
    import numpy as np

    segments = [row["segment_id"] for row in catalog]
    strongest: dict[str, float] = {}
    for row in profiles:
        strongest[row["feature"]] = max(strongest.get(row["feature"], 0.0), abs(row["std_diff"] or 0.0))
    features = sorted(strongest, key=lambda name: -strongest[name])[:HEATMAP_FEATURES]
    cells = {(row["segment_id"], row["feature"]): row for row in profiles}
    values = np.array(
        [[cells[(s, f)]["std_diff"] or 0.0 if (s, f) in cells else 0.0 for f in features] for s in segments]
    )
    figure, axes = plt.subplots(figsize=(1.0 + 0.62 * len(features), 0.55 * len(segments) + 2.4))
    image = axes.imshow(np.clip(values, -2.5, 2.5), cmap="RdBu_r", vmin=-2.5, vmax=2.5, aspect="auto")
    for i, segment in enumerate(segments):
        for j, feature in enumerate(features):
            lift = cells.get((segment, feature), {"lift": None})["lift"]
            if lift is not None:
                axes.text(j, i, f"x{lift:.1f}", ha="center", va="center", fontsize=7)
    axes.set_xticks(range(len(features)), features, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(
        range(len(segments)), [f"{row['segment_id']}: {row['segment_name']}" for row in catalog], fontsize=8
    )
    axes.set_title(
        "Feature lifts (colour: standardized difference, text: lift = segment mean / population mean)"
    )
    figure.colorbar(image, ax=axes, label="standard deviations from the population mean", shrink=0.8)
    return _png(figure)


def embedding_map(points: list[Row], catalog: list[Row]) -> bytes:
    """First two principal components of a sample of embeddings, coloured by segment."""
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.array([row[EMBEDDING_COLUMN] for row in points], dtype=float)
    centered = matrix - matrix.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    projected = centered @ components[:2].T
    segment_ids = np.array([row["segment_id"] for row in points])
    figure, axes = plt.subplots(figsize=(7, 5.5))
    names = {row["segment_id"]: row["segment_name"] for row in catalog}
    for color, segment in zip(_palette(len(catalog)), [row["segment_id"] for row in catalog], strict=True):
        chosen = segment_ids == segment
        axes.scatter(
            projected[chosen, 0],
            projected[chosen, 1],
            s=6,
            alpha=0.6,
            color=color,
            label=f"{segment}: {names[segment]}",
        )
    novel = segment_ids < 0
    if novel.any():
        axes.scatter(projected[novel, 0], projected[novel, 1], s=18, marker="x", color="black", label="novel")
    axes.set_xlabel("component 1")
    axes.set_ylabel("component 2")
    axes.set_title(f"Embeddings of {len(points):,} sampled customers (PCA)")
    axes.legend(fontsize=7, markerscale=2, loc="best")
    return _png(figure)


def selection_chart(candidates: list[Row]) -> bytes:
    import matplotlib.pyplot as plt

    ks = [row["k"] for row in candidates]
    figure, axes = plt.subplots(figsize=(7, 3.6))
    axes.plot(ks, [row["silhouette"] for row in candidates], marker="o", label="silhouette")
    axes.plot(ks, [row["prediction_strength"] for row in candidates], marker="s", label="prediction strength")
    axes.plot(ks, [row["smallest_share"] for row in candidates], marker="^", label="smallest segment share")
    for row in candidates:
        if row["chosen"]:
            axes.axvline(row["k"], color="grey", linestyle="--")
            axes.text(row["k"], 1.02, f" chosen k={row['k']}", fontsize=9)
        if not row["eligible"]:
            axes.scatter([row["k"]], [row["silhouette"]], s=90, facecolors="none", edgecolors="red")
    axes.set_xticks(ks)
    axes.set_ylim(0, 1.1)
    axes.set_xlabel("k")
    axes.set_title("Choice of k (red circle: rejected candidate)")
    axes.legend(fontsize=8)
    return _png(figure)


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
) -> str:
    e = html.escape
    cards = []
    for index, row in enumerate(catalog):
        identity = (
            "new segment"
            if row["previous_similarity"] is None
            else f"same segment as last run (overlap {row['previous_similarity']:.2f})"
        )
        features = (
            "".join(f"<li>{e(text)}</li>" for text in row["top_features"]) or "<li>none stands out</li>"
        )
        rules = "".join(f"<li>{e(text)}</li>" for text in row["surrogate_rules"]) or "<li>-</li>"
        cards.append(
            f'<div class="card" style="--c:{_color(index, len(catalog))}" data-segment="{row["segment_id"]}">'
            f"<h3>{e(row['segment_name'])}</h3>"
            f'<div class="numbers">segment {row["segment_id"]} &middot; {row["segment_size"]:,} customers '
            f"&middot; {row['segment_share']:.1%} &middot; {e(identity)}</div>"
            f"<p>{e(row['description'])}</p><div class=action><b>Action:</b> {e(row['action'])}</div>"
            f"<p><b>Stands out on</b></p><ul>{features}</ul><p><b>Rules (decision tree)</b></p><ul>{rules}</ul></div>"
        )
    drift_html = ""
    if drift:
        warnings = [row for row in drift if row["warning"]]
        listed = "".join(
            f"<li>{e(row['metric'])} {e(row['name'])}: {row['value']:.3f} (threshold {row['threshold']})</li>"
            for row in warnings
        )
        drift_html = "<h2>Drift since training</h2>" + (
            f'<div class="warn">Retraining recommended:<ul>{listed}</ul></div>'
            if warnings
            else "<p>No drift beyond the thresholds.</p>"
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
<h2>Segments</h2><div class="grid" id="segments">{"".join(cards)}</div>
{drift_html}
<h2>Charts</h2>{figures}
</body></html>
"""


def segmentation_of(warehouse: Warehouse, database: str, snapshot: dt.date) -> dt.date:
    """The snapshot whose segmentation run describes `snapshot`: itself when it was clustered, else
    the one `seg score` used for it."""
    if (
        warehouse.exists(database, RUNS_TABLE)
        and not warehouse.snapshot_rows(database, RUNS_TABLE, snapshot).isEmpty()
    ):
        return snapshot
    if warehouse.exists(database, DRIFT_TABLE):
        scored = (
            warehouse.snapshot_rows(database, DRIFT_TABLE, snapshot).select("segmentation_snapshot").first()
        )
        if scored is not None:
            return scored[0]  # type: ignore[no-any-return]
    raise InputDataError(
        f"snapshot {snapshot} was neither clustered nor scored in {database}; run `seg cluster` or "
        "`seg score` for it first"
    )


def report(spark: SparkSession, config: SeglibConfig) -> ReportResult:
    snapshot = config.features.snapshot_date
    database = config.storage.database
    warehouse = Warehouse.from_config(spark, config)
    segmentation_snapshot = segmentation_of(warehouse, database, snapshot)
    run = warehouse.read_snapshot(database, RUNS_TABLE, segmentation_snapshot).first()
    assert run is not None
    catalog = (
        warehouse.read_snapshot(database, CATALOG_TABLE, segmentation_snapshot)
        .orderBy("segment_id")
        .collect()
    )
    profiles = warehouse.read_snapshot(database, PROFILES_TABLE, segmentation_snapshot).collect()
    segments = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot)
    embeddings = warehouse.read_snapshot(database, EMBEDDINGS_TABLE, snapshot)
    total = segments.count()
    fraction = min(1.0, config.report.sample_rows / max(total, 1))
    points = (
        embeddings.select("customer_id", EMBEDDING_COLUMN)
        .join(segments.select("customer_id", "segment_id"), "customer_id")
        .sample(fraction=fraction, seed=config.cluster.seed)
        .limit(config.report.sample_rows)
        .collect()
    )
    charts = {
        "segment_sizes": (sizes_chart(catalog), "Share of customers per segment"),
        "feature_lifts": (lift_heatmap(catalog, profiles), "The features that set the segments apart"),
        "embedding_map": (embedding_map(points, catalog), "Where the segments lie in the embedding space"),
    }
    candidates = sorted(
        warehouse.optional_snapshot_rows(database, SELECTION_TABLE, segmentation_snapshot),
        key=lambda row: row["k"],
    )
    if candidates and run["k_chosen_by"] == "auto":
        charts["k_selection"] = (selection_chart(candidates), "Candidates for the number of segments")
    drift = warehouse.optional_snapshot_rows(database, DRIFT_TABLE, snapshot)
    folder = report_folder(config, snapshot)
    written = []
    for name, (payload, _) in charts.items():
        uri = join_uri(folder, f"{name}.png")
        store.write_bytes(uri, payload)
        written.append(uri)
    location = join_uri(folder, "report.html")
    page = render_html(snapshot, segmentation_snapshot, total, run, catalog, charts, drift)
    store.write_bytes(location, page.encode("utf-8"))
    log.info("report for snapshot %s: %s", snapshot, location)
    return ReportResult(location, written)
