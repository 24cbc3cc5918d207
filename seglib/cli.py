"""The `seg` command and the shared body of the `jobs/*.py` spark-submit entry points."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from seglib.contract.config import PIPELINE_ORDER, SeglibConfig, load_config
from seglib.contract.errors import ExitStatus, SeglibError, exit_status

log = logging.getLogger("seglib")

COMMANDS: tuple[str, ...] = (*PIPELINE_ORDER, "run", "score")
DESCRIPTIONS = {
    "generate": "write a synthetic e-commerce data set with planted personas (raw tables)",
    "features": "compute point-in-time customer features and scale them (customer_features)",
    "train": "train the autoencoder with Horovod on Spark, reading through Petastorm",
    "embed": "embed every customer with the trained encoder (customer_embeddings)",
    "cluster": "segments from the embeddings: k, stable ids, names, profiles, tree rules (customer_segments, "
    "segment_profiles, segment_catalog, ...)",
    "report": "write the self-contained HTML report of the snapshot's segments (and PNG charts)",
    "run": "all stages in order, then print the segments",
    "score": "segment a new snapshot with the saved model and segmentation, upsert customer_segments, record drift",
    "sql": "run a SQL query against the seglib tables and print the result",
}


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (see conf/); built-in defaults when omitted")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=20 (repeatable)",
    )
    parser.add_argument(
        "--snapshot-day-before",
        metavar="YYYY-MM-DD",
        type=_day,
        help="set features.snapshot_date to the day before this date: a scheduled job passes its start "
        "date (Databricks: {{job.start_time.iso_date}}) to process the last complete day",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg", description="Deep-learning customer segmentation on Spark.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, description in DESCRIPTIONS.items():
        sub = commands.add_parser(name, help=description, description=description)
        _add_common_options(sub)
        if name == "sql":
            sub.add_argument(
                "query",
                help='for example: "SELECT segment_id, count(*) FROM seg.customer_segments GROUP BY 1"',
            )
            sub.add_argument("--limit", type=int, default=50, help="rows to print")
            sub.add_argument(
                "--allow-writes",
                action="store_true",
                help="also run statements that change tables or the catalog (INSERT, DROP, ...); without it "
                "seg sql runs queries only",
            )
        if name == "score":
            sub.add_argument(
                "--no-retrain-status",
                action="store_true",
                help=f"exit 0 rather than {int(ExitStatus.RETRAIN)} when drift recommends retraining, for "
                "schedulers that branch on a value instead (the recommendation is still logged, recorded in "
                "segment_drift and, on Databricks, set as the task value retrain_recommended)",
            )
        if name == "features":
            sub.add_argument(
                "--describe",
                action="store_true",
                help="print the feature catalog (family, source, transformation, statistics) of the "
                "snapshot instead of computing features",
            )
    return parser


READ_STATEMENTS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "FROM", "EXPLAIN"})
INSPECT_STATEMENTS = frozenset({"SHOW", "DESCRIBE", "DESC", "LIST"})
WRITE_WORDS = frozenset({
    "INSERT", "MERGE", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "TRUNCATE", "REPLACE", "LOAD",
    "MSCK", "REPAIR", "REFRESH", "CACHE", "UNCACHE", "SET", "RESET", "ADD", "VACUUM", "OPTIMIZE", "RESTORE",
    "CONVERT", "GRANT", "REVOKE", "USE", "CLEAR", "OVERWRITE", "ANALYZE", "COMMENT", "CLONE", "FSCK", "REORG",
})  # fmt: skip
# String literals, quoted identifiers and comments: words inside them are data, not SQL.
_NOT_SQL_WORDS = re.compile(
    r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`]|``)*`|--[^\n]*|/\*.*?\*/", re.DOTALL
)


def read_only_refusal(query: str) -> str | None:
    """Why `seg sql` will not run `query` without --allow-writes (None: it only reads).

    A query is read-only when it starts with SELECT/WITH/VALUES/TABLE/FROM/EXPLAIN and has no keyword
    that changes data or the catalog outside string literals and quoted names (WITH ... INSERT is SQL
    too); SHOW and DESCRIBE statements likewise. A column literally named like such a keyword needs
    backticks.
    """
    words = [word.upper() for word in re.findall(r"[A-Za-z_]+", _NOT_SQL_WORDS.sub(" ", query))]
    if not words or words[0] not in READ_STATEMENTS | INSPECT_STATEMENTS:
        first = words[0] if words else "(nothing)"
        return f"{first} statements can change tables or the catalog"
    # SHOW CREATE TABLE only shows the statement.
    writes = WRITE_WORDS - {"CREATE"} if words[0] in INSPECT_STATEMENTS else WRITE_WORDS
    found = sorted(writes.intersection(words))
    if found:
        return f"the query holds {', '.join(found)}, which can change tables or the catalog (quote a column of that name in backticks)"
    return None


def configure_logging(verbose: bool) -> None:
    """seglib's progress at INFO; other libraries (Horovod's rendezvous, py4j retries) at WARNING."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,  # PySpark may have configured the root logger already
    )
    logging.getLogger("seglib").setLevel(logging.DEBUG if verbose else logging.INFO)
    # Petastorm 0.12 uses pyarrow's legacy dataset API; the pins in STACK.md keep it working.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def execute(
    command: str,
    config: SeglibConfig,
    query: str | None = None,
    limit: int = 50,
    describe: bool = False,
    allow_writes: bool = False,
) -> Any:
    """Open the session, register the existing tables, run one stage (or the pipeline)."""
    if command == "sql" and not allow_writes and query is not None:
        refusal = read_only_refusal(query)
        if refusal is not None:
            raise SeglibError(
                f"seg sql runs queries only, and this one may write: {refusal}. Run it with --allow-writes if "
                "changing tables is what you mean"
            )
    from seglib.pipeline import STAGES, progress_of, run_pipeline
    from seglib.platform.session import open_session
    from seglib.platform.warehouse import Warehouse

    spark = open_session(config)
    warehouse = Warehouse.from_config(spark, config)
    for database in (config.input.database, config.storage.database):
        warehouse.register_existing_tables(database)
    if command == "run":
        report = run_pipeline(spark, config)
        print(report.format())
        return report
    if command == "sql":
        assert query is not None
        from pyspark.errors import AnalysisException, ParseException

        try:
            spark.sql(query).show(limit, truncate=False)
        except (AnalysisException, ParseException) as error:
            raise SeglibError(f"the query failed: {str(error).splitlines()[0]}") from None
        return None
    if command == "features" and describe:
        from seglib.features.stage import describe_features

        print(describe_features(spark, config))
        return None
    with progress_of(spark, command):
        if command == "score":
            result = score_and_tell_the_job(spark, config)
        else:
            result = STAGES[command](spark, config)  # type: ignore[index]
    print(describe_result(command, result))
    return result


def score_and_tell_the_job(spark: Any, config: SeglibConfig) -> Any:
    """`seg score`, then the task values a Databricks job branches on (nothing elsewhere)."""
    from seglib.platform.databricks import set_task_values
    from seglib.serving.scoring import score

    result = score(spark, config)
    set_task_values(
        spark,
        {
            "retrain_recommended": result.drift.retrain_recommended,
            "segment_psi": round(result.drift.segment_psi, 6),
            "novel_share": round(result.drift.novel_share, 6),
            "snapshot_date": result.snapshot.isoformat(),
        },
    )
    return result


def describe_result(command: str, result: Any) -> str:
    """One line (or the segment table) for the user, on stdout."""
    if command == "generate":
        return (
            f"generated {result.customers} customers, {result.transactions} transactions, "
            f"{result.events} events"
        )
    if command == "embed":
        return f"embedded customers with model {result}"
    return str(result.format())


def config_from_args(args: argparse.Namespace) -> SeglibConfig:
    """The config a command line names: --config, then each --set, then --snapshot-day-before."""
    overrides = list(args.overrides)
    if args.snapshot_day_before is not None:
        overrides.append(f"features.snapshot_date={args.snapshot_day_before - dt.timedelta(days=1)}")
    return load_config(args.config, overrides)


def main(argv: Sequence[str] | None = None, command: str | None = None) -> int:
    """`seg COMMAND [options]`, or a job's fixed COMMAND with options only. Returns an `ExitStatus`:
    0 done, 2 bad command line or config (or a refused write), 3 bad input data, 4 a run-time failure,
    10 scored but drift recommends retraining."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if command is not None:
        arguments = [command, *arguments]
    args = parser.parse_args(arguments)
    configure_logging(args.verbose)
    try:
        config = config_from_args(args)
        result = execute(
            args.command,
            config,
            getattr(args, "query", None),
            getattr(args, "limit", 50),
            getattr(args, "describe", False),
            getattr(args, "allow_writes", False),
        )
    except SeglibError as error:
        print(f"seg {args.command}: error: {error}", file=sys.stderr)
        return exit_status(error)
    except Exception as error:  # a scheduler branches on the status; the traceback is logged
        log.exception("seg %s failed", args.command)
        print(f"seg {args.command}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return exit_status(error)
    if args.command == "score" and result.drift.retrain_recommended and not args.no_retrain_status:
        print(
            f"seg score: drift recommends retraining (exit status {int(ExitStatus.RETRAIN)}): "
            + "; ".join(result.drift.warnings),
            file=sys.stderr,
        )
        return ExitStatus.RETRAIN
    return ExitStatus.OK


if __name__ == "__main__":
    raise SystemExit(main())
