"""Every name the config accepts has its registry entry, and every entry its config name: a new clustering
algorithm, model kind, launcher or stage is one entry plus its Literal, never a chain of ifs."""

from __future__ import annotations

from typing import get_args

from seglib.contract.config import PIPELINE_ORDER, ClusterConfig, Stage, TrainConfig
from seglib.pipeline import STAGES
from seglib.representation.launchers import LAUNCHERS
from seglib.representation.models import MODEL_KINDS, AutoencoderSpec, build_model
from seglib.segments.algorithms import ALGORITHMS


def literal_values(model: type, field: str) -> set[str]:
    return set(get_args(model.model_fields[field].annotation))


def test_clustering_algorithms_in_the_config_are_the_registry():
    assert literal_values(ClusterConfig, "algorithm") == set(ALGORITHMS)


def test_model_kinds_in_the_config_are_the_registry_with_a_version_prefix_each():
    assert literal_values(TrainConfig, "model") == set(MODEL_KINDS)
    prefixes = [entry.version_prefix for entry in MODEL_KINDS.values()]
    assert len(set(prefixes)) == len(prefixes) and all(prefix.isalnum() for prefix in prefixes)


def test_launchers_and_stages_in_the_config_are_the_registries():
    assert literal_values(TrainConfig, "launcher") == set(LAUNCHERS)
    assert set(get_args(Stage)) == set(STAGES) == set(PIPELINE_ORDER)


def test_each_model_kind_builds_its_own_module_and_starts_with_pretraining():
    for kind, entry in MODEL_KINDS.items():
        spec = AutoencoderSpec(input_dim=4, hidden_dims=(3,), embedding_dim=2, kind=kind, clusters=2)  # type: ignore[arg-type]
        assert type(build_model(spec)) is entry.module_class
        assert entry.phases[0] == "pretrain"
