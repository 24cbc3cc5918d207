"""Segment quality against the planted personas: do the deep models earn their place?

    .venv/bin/python bench/quality.py [--scenario overlapping|planted] [--customers 3000] [--seeds 3]
                                      [--set key=value ...]

Scenarios (generator settings):
  overlapping  (default) customers of one persona range from occasional to heavy users (log-normal
               activity, generate.engagement_spread=0.7) and the personas overlap in what, when and
               how much they buy (generate.persona_contrast=0.6). Activity bends every count, recency,
               share and ratio feature non-linearly, so a persona is a curved, noisy band in feature
               space rather than a ball, and bands of different personas pass close to each other.
  planted      the personas as planted, each customer as active as its persona on average.

For each seed, generates customers (generate.seed), builds the features, then clusters them six
ways with the same Spark MLlib KMeans (k = the number of personas, best of cluster.restarts):
  raw       KMeans on the scaled features
  pca       PCA to train.embedding_dim components, then KMeans
  ae_plain  a plain autoencoder's embeddings (train.corruption=0), then KMeans
  ae        the autoencoder as configured (denoising by default), KMeans on its embeddings
  ae_recon  the same autoencoder, KMeans on its reconstructions (cluster.space=reconstruction)
  idec      the IDEC embeddings (that autoencoder fine-tuned with the clustering loss), then KMeans
and scores each with the adjusted Rand index and normalized mutual information. Prints one table
and the means. Last line: RESULT with the mean ARIs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from pyspark.ml.feature import PCA
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from seglib.cli import configure_logging
from seglib.contract.config import SeglibConfig, load_config
from seglib.contract.tables import TRUTH_TABLE
from seglib.features.stage import features
from seglib.platform.session import open_session
from seglib.representation.embedding import embed
from seglib.representation.stage import train
from seglib.segments.algorithms import fit_clusters
from seglib.synthetic.generator import generate

METHODS = ("raw", "pca", "ae_plain", "ae", "ae_recon", "idec")
SCENARIOS = {
    "overlapping": ["generate.engagement_spread=0.7", "generate.persona_contrast=0.6"],
    "planted": [],
}


def scores(labels: dict[str, int], truth: dict[str, str]) -> tuple[float, float]:
    personas, clusters = [truth[customer] for customer in labels], list(labels.values())
    return adjusted_rand_score(personas, clusters), normalized_mutual_info_score(personas, clusters)


def kmeans_labels(vectors: DataFrame, column: str, config: SeglibConfig) -> dict[str, int]:
    """Each customer's cluster, collected now. Not a cached DataFrame: the next method's training
    rewrites customer_embeddings, and Spark then rebuilds a cached plan over that table from the new
    rows, which scored one method's centres on the next method's embeddings."""
    model = fit_clusters(vectors, column, config.cluster, int(config.cluster.k))
    rows = model.transform(vectors).select("customer_id", "_cluster").collect()
    return {row.customer_id: row._cluster for row in rows}


def embeddings_of(  # type: ignore[no-untyped-def]
    spark, config: SeglibConfig, model: str, corruption: float | None = None
) -> DataFrame:
    changes: dict[str, object] = {"model": model}
    if corruption is not None:
        changes["corruption"] = corruption
    settings = config.model_copy(update={"train": config.train.model_copy(update=changes)})
    train(spark, settings)
    embed(spark, settings)
    table = spark.table(f"{config.storage.database}.customer_embeddings")
    return table.select(
        "customer_id",
        array_to_vector("embedding").alias("vector"),
        array_to_vector("reconstruction").alias("reconstruction"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="overlapping")
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    configure_logging(verbose=False)
    root = Path(tempfile.mkdtemp(prefix="seg-bench-quality-"))
    spark = None
    results: dict[str, list[tuple[float, float]]] = {method: [] for method in METHODS}
    for seed in range(1, args.seeds + 1):
        folder = root / f"seed-{seed}"
        config = load_config(
            None,
            [
                "spark.log_level=ERROR",
                "train.progress=false",
                f"storage.warehouse_dir={folder / 'warehouse'}",
                f"storage.model_dir={folder / 'models'}",
                f"storage.cache_dir={folder / 'cache'}",
                f"storage.database=quality_{seed}",
                f"input.database=quality_{seed}_raw",
                f"generate.customers={args.customers}",
                f"generate.seed={seed}",
                f"train.seed={seed}",
                *SCENARIOS[args.scenario],
                *args.overrides,
            ],
        )
        spark = spark or open_session(config)
        generate(spark, config)
        features(spark, config)
        truth = {
            row.customer_id: row.persona
            for row in spark.table(f"{config.input.database}.{TRUTH_TABLE}")
            .select(F.col("customer_id").cast("string").alias("customer_id"), "persona")
            .collect()
        }
        personas = len(set(truth.values()))
        config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"k": personas})})
        scaled = spark.table(f"{config.storage.database}.customer_features").select(
            "customer_id", array_to_vector("features").alias("vector")
        )
        pca = PCA(k=config.train.embedding_dim, inputCol="vector", outputCol="projected").fit(scaled)
        # One method after the other: each training rewrites customer_embeddings, and each method's labels
        # are computed (cached) before the next one starts.
        labelled = {
            "raw": kmeans_labels(scaled, "vector", config),
            "pca": kmeans_labels(pca.transform(scaled), "projected", config),
            "ae_plain": kmeans_labels(embeddings_of(spark, config, "autoencoder", 0.0), "vector", config),
        }
        trained = embeddings_of(spark, config, "autoencoder")
        labelled["ae"] = kmeans_labels(trained, "vector", config)
        labelled["ae_recon"] = kmeans_labels(trained, "reconstruction", config)
        labelled["idec"] = kmeans_labels(embeddings_of(spark, config, "idec"), "vector", config)
        for method, clustered in labelled.items():
            results[method].append(scores(clustered, truth))
            ari, nmi = results[method][-1]
            print(f"seed {seed} {method:>8}: ARI {ari:.3f}  NMI {nmi:.3f}", flush=True)
    print(
        f"\nscenario {args.scenario}: {args.customers} customers per seed, {args.seeds} seeds, "
        "k = number of planted personas"
    )
    print(
        f"{'method':>8} | "
        + " | ".join(f"{f'seed {seed} ARI / NMI':^19}" for seed in range(1, args.seeds + 1))
        + " | mean ARI | mean NMI"
    )
    means: dict[str, float] = {}
    for method in METHODS:
        cells = " | ".join(f"   {ari:.3f} / {nmi:.3f}   " for ari, nmi in results[method])
        means[method] = statistics.mean(ari for ari, _ in results[method])
        mean_nmi = statistics.mean(nmi for _, nmi in results[method])
        print(f"{method:>8} | {cells} |   {means[method]:.3f}  |   {mean_nmi:.3f}")
    print(
        f"RESULT ari_raw={means['raw']:.3f} ari_pca={means['pca']:.3f} ari_ae={means['ae']:.3f} "
        f"ari_ae_recon={means['ae_recon']:.3f} ari_idec={means['idec']:.3f} ari_ae_plain={means['ae_plain']:.3f}"
    )


if __name__ == "__main__":
    main()
