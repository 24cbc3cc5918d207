"""What seglib created itself, and the check that keeps it from writing anywhere else.

seglib writes only to folders it created. Each one (an output table, a raw table or file source that
`seg generate` wrote) holds a marker file, `_seglib_created`, that Spark's file readers skip (names
starting with `_` are not data) and Delta never reads (it reads its log). A folder that exists without
the marker belongs to someone else: every write to it is refused with `UnsafeWriteError`, whatever the
configuration says. An empty folder (made ready for seglib by its owner) may be claimed.

Catalog entries that seglib registers carry the table property `seglib.created_by`; `Warehouse` only
ever re-points such entries (see `seglib.warehouse`).
"""

from __future__ import annotations

import json

from pyspark.sql import SparkSession

from seglib.contract.errors import UnsafeWriteError
from seglib.contract.uris import join_uri, mask_credentials
from seglib.platform.files import HadoopFiles

MARKER = "_seglib_created"
OWNER_PROPERTY = "seglib.created_by"
OWNER_VALUE = "seglib"


def marker_uri(location: str) -> str:
    return join_uri(location, MARKER)


def is_seglib_folder(spark: SparkSession, location: str) -> bool:
    return HadoopFiles(spark).exists(marker_uri(location))


def claim_folder(spark: SparkSession, location: str, what: str) -> None:
    """Allow a write to `location` only if it does not exist, is an empty folder, or is seglib's own.

    `what` names the target for the message, e.g. "table seg.customer_segments" or "the csv source".
    """
    if not HadoopFiles(spark).exists(location) or is_seglib_folder(spark, location):
        return
    if HadoopFiles(spark).is_empty_directory(location):
        return
    raise UnsafeWriteError(
        f"{what} at {mask_credentials(location)} holds data that seglib did not create (it has no {MARKER} "
        "marker). seglib never writes to, overwrites or deletes data it did not create. "
        "Point the configuration at a new location (or at a table seglib wrote), or, if this folder is a "
        "disposable copy, delete it yourself first"
    )


def mark_folder(spark: SparkSession, location: str) -> None:
    """Record that seglib created `location` (after its first write; rewritten after a full overwrite)."""
    if not is_seglib_folder(spark, location):
        HadoopFiles(spark).write_text(marker_uri(location), json.dumps({"created_by": OWNER_VALUE}) + "\n")
