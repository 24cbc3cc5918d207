# Databricks notebook source
# MAGIC %md
# MAGIC # Customer segments from DataFrames with seglib
# MAGIC
# MAGIC `seglib.Segmentation` runs the same stages as `seg run` (features, Horovod training through
# MAGIC Petastorm, embeddings, clustering) on DataFrames you already have, in this notebook's `spark`
# MAGIC session. seglib sets the session settings its results depend on (UTC, the timestamp parser
# MAGIC policy) for each call and restores yours afterwards.
# MAGIC
# MAGIC Needs a Databricks Runtime ML cluster (it ships Horovod and Petastorm; see ../README.md) with the
# MAGIC seglib wheel installed. The widgets name seglib's own output location: a database seglib creates,
# MAGIC and folders for its warehouse, models and cache. seglib never writes into your input tables.

# COMMAND ----------

from seglib import Segmentation

dbutils.widgets.text("transactions_table", "main.sales.order_lines")  # noqa: F821 (notebook globals)
dbutils.widgets.text("snapshot_date", "2026-11-30")  # noqa: F821
dbutils.widgets.text("output_database", "seg_notebook")  # noqa: F821
dbutils.widgets.text("output_root", "dbfs:/tmp/seglib-notebook")  # noqa: F821

# COMMAND ----------

root = dbutils.widgets.get("output_root")  # noqa: F821
segmentation = Segmentation(
    {
        "spark": {"master": None},
        "storage": {
            "database": dbutils.widgets.get("output_database"),  # noqa: F821
            "warehouse_dir": f"{root}/warehouse",
            "model_dir": f"{root}/models",
            "cache_dir": f"{root}/cache",
        },
        # Your column names for each role; null: the table has no such column.
        "input": {
            "transactions": {
                "columns": {
                    "customer_id": "customer_id",
                    "timestamp": "order_ts",
                    "amount": "net_amount",
                    "quantity": "units",
                    "category": "department",
                    "transaction_id": None,
                    "order_id": "order_id",
                    "channel": None,
                    "discount": None,
                    "is_return": None,
                }
            }
        },
        "run": {"stages": ["features", "train", "embed", "cluster", "report"]},
    }
)

# COMMAND ----------

transactions = spark.table(dbutils.widgets.get("transactions_table"))  # noqa: F821
fitted = segmentation.fit(spark, transactions, snapshot_date=dbutils.widgets.get("snapshot_date"))  # noqa: F821
print(fitted.pipeline.format())

# COMMAND ----------

display(fitted.catalog.select("segment_id", "segment_name", "segment_share", "description", "action"))  # noqa: F821

# COMMAND ----------

# MAGIC %md
# MAGIC Each customer's segment, its distance and margin, novelty and lifetime value; rows a check
# MAGIC rejected are in `fitted.quarantine` with their reason.

# COMMAND ----------

display(fitted.segments)  # noqa: F821

# COMMAND ----------

# MAGIC %md
# MAGIC Later: score a new snapshot with the fitted segmentation (as `seg score`), with drift.

# COMMAND ----------

# scored = segmentation.transform(spark, spark.table(...), snapshot_date="2026-12-31")
# print(scored.scoring.format())
