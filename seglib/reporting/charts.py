"""The report's charts as PNG bytes (matplotlib, imported when drawn): segment sizes, feature lifts,
the embedding map and the choice of k."""

from __future__ import annotations

import io
from typing import Any

from pyspark.sql import Row

from seglib.contract.tables import (
    EMBEDDING_COLUMN,
)

HEATMAP_FEATURES = 14


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
    novel = np.array([bool(row["is_novel"]) for row in points], dtype=bool)
    figure, axes = plt.subplots(figsize=(7, 5.5))
    names = {row["segment_id"]: row["segment_name"] for row in catalog}
    for color, segment in zip(_palette(len(catalog)), [row["segment_id"] for row in catalog], strict=True):
        chosen = (segment_ids == segment) & ~novel
        axes.scatter(
            projected[chosen, 0],
            projected[chosen, 1],
            s=6,
            alpha=0.6,
            color=color,
            label=f"{segment}: {names[segment]}",
        )
    if novel.any():
        axes.scatter(
            projected[novel, 0],
            projected[novel, 1],
            s=18,
            marker="x",
            color="black",
            label="novel (in their nearest segment)",
        )
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
    agreements = [row.asDict().get("member_agreement") for row in candidates]
    if any(agreement is not None for agreement in agreements):  # a model of several members
        axes.plot(
            ks, [float("nan") if a is None else a for a in agreements], marker="D", label="member agreement"
        )
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
