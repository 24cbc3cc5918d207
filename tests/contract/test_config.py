from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from seglib.cli import main
from seglib.contract.config import SeglibConfig, load_config
from seglib.contract.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_conf_default_yaml_spells_out_exactly_the_built_in_defaults():
    assert load_config(REPO / "conf" / "default.yaml") == SeglibConfig()


def test_overrides_are_parsed_as_yaml_and_validated():
    config = load_config(
        None, ["train.epochs=3", "train.hidden_dims=[16, 8]", "features.snapshot_date=2025-03-31"]
    )
    assert config.train.epochs == 3
    assert config.train.hidden_dims == [16, 8]
    assert config.features.snapshot_date == dt.date(2025, 3, 31)


def test_unknown_key_in_file_is_rejected_with_its_location(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        load_config(path)


def test_unknown_key_in_override_is_rejected():
    with pytest.raises(ConfigError, match=r"cluster\.kk: unknown key"):
        load_config(None, ["cluster.kk=4"])


def test_bad_value_names_the_key_and_the_value():
    with pytest.raises(ConfigError, match=r"cluster\.k: .*between 2 and 1000, or auto.*got 1"):
        load_config(None, ["cluster.k=1"])


@pytest.mark.parametrize("name", ["seg; DROP TABLE x", "1seg", "seg-prod", "a.b", ""])
def test_database_names_that_are_not_identifiers_never_reach_sql(name):
    with pytest.raises(ConfigError, match=r"storage\.database"):
        load_config(None, [f"storage.database='{name}'"])


@pytest.mark.parametrize(
    "override",
    [
        "input.transactions.source.name=orders`--",
        "input.customers.source.name='raw.people; DROP'",
        "input.events.columns.session_id='id) OR (1=1'",
        "input.customers.categorical_attributes=['plan`']",
    ],
)
def test_input_table_and_column_names_are_validated(override):
    with pytest.raises(ConfigError, match=r"input\.\w+.* is not a valid identifier"):
        load_config(None, [override])


def test_override_without_equals_sign_explains_the_syntax():
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["train.epochs"])


def test_stages_must_follow_the_pipeline_order():
    assert load_config(None, ["run.stages=[features, cluster]"]).run.stages == ["features", "cluster"]
    with pytest.raises(ConfigError, match=r"run\.stages"):
        load_config(None, ["run.stages=[cluster, features]"])


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_config_errors_with_exit_status_2(capsys):
    assert main(["features", "--set", "features.snapshot=2025-01-01"]) == 2
    assert "features.snapshot: unknown key" in capsys.readouterr().err


def test_idec_with_automatic_k_asks_for_its_number_of_clusters():
    with pytest.raises(ConfigError, match=r"train\.idec\.clusters, or a fixed cluster\.k"):
        load_config(None, ["train.model=idec"])
    assert load_config(None, ["train.model=idec", "cluster.k=4"]).cluster.k == 4


def test_a_model_uri_and_a_segmentation_snapshot_exclude_each_other():
    assert load_config(None, ["score.model_uri=models:/segments@production"]).score.model_uri
    with pytest.raises(ConfigError, match="not both"):
        load_config(None, ["score.model_uri=models:/segments/3", "score.segmentation_snapshot=2025-01-31"])
    with pytest.raises(ConfigError, match="must start with models:/ or runs:/"):
        load_config(None, ["score.model_uri=segments@production"])
