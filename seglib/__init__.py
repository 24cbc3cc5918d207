"""seglib: deep-learning customer segmentation at warehouse scale.

The package is layered; each layer imports only the ones below it (checked by import-linter):

    cli, api             the `seg` command; `Segmentation` for notebooks (fit/transform on DataFrames)
    pipeline             the stage order
    reporting, serving   the HTML report; scoring new snapshots and drift
    segments             clustering algorithms, k selection, profiles, names, explanations, saved state
    representation       model kinds, the per-rank training loop, launchers, tracking, embeddings
    features, synthetic  point-in-time features and preprocessing; the planted-persona generator
    inputs               reading and validating the user's tables
    platform             Spark session, warehouse tables, small files, ownership, progress
    contract, numerics   config, errors, table names, artifact layout; numpy kernels

The names below are the public API (the stages by name in `STAGES`, run in order by `run_pipeline`),
imported on first use so that `import seglib` (and validating a config) loads neither Spark nor torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Segmentation": "seglib.api",
    "SegmentationResult": "seglib.api",
    "load_config": "seglib.contract.config",
    "SeglibConfig": "seglib.contract.config",
    "Artifacts": "seglib.contract.artifacts",
    "SeglibError": "seglib.contract.errors",
    "ConfigError": "seglib.contract.errors",
    "InputDataError": "seglib.contract.errors",
    "TrainingError": "seglib.contract.errors",
    "UnsafeWriteError": "seglib.contract.errors",
    "open_session": "seglib.platform.session",
    "Warehouse": "seglib.platform.warehouse",
    "score": "seglib.serving.scoring",
    "run_pipeline": "seglib.pipeline",
    "STAGES": "seglib.pipeline",
    "PipelineReport": "seglib.pipeline",
    "ALGORITHMS": "seglib.segments.algorithms",
    "ClusteringAlgorithm": "seglib.segments.algorithms",
    "MODEL_KINDS": "seglib.representation.models",
    "LAUNCHERS": "seglib.representation.launchers",
}

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "LAUNCHERS",
    "MODEL_KINDS",
    "STAGES",
    "Artifacts",
    "ClusteringAlgorithm",
    "ConfigError",
    "InputDataError",
    "PipelineReport",
    "SeglibConfig",
    "SeglibError",
    "Segmentation",
    "SegmentationResult",
    "TrainingError",
    "UnsafeWriteError",
    "Warehouse",
    "load_config",
    "open_session",
    "run_pipeline",
    "score",
]

if TYPE_CHECKING:
    from seglib.api import Segmentation, SegmentationResult
    from seglib.contract.artifacts import Artifacts
    from seglib.contract.config import SeglibConfig, load_config
    from seglib.contract.errors import (
        ConfigError,
        InputDataError,
        SeglibError,
        TrainingError,
        UnsafeWriteError,
    )
    from seglib.pipeline import STAGES, PipelineReport, run_pipeline
    from seglib.platform.session import open_session
    from seglib.platform.warehouse import Warehouse
    from seglib.representation.launchers import LAUNCHERS
    from seglib.representation.models import MODEL_KINDS
    from seglib.segments.algorithms import ALGORITHMS, ClusteringAlgorithm
    from seglib.serving.scoring import score


# Module paths a script or notebook was likely to import before the layered layout (0.1), kept for one
# release. Modules whose contents were split (features, train, cluster, ...) have no alias: their names
# moved to several modules, so an alias would fail later with a less clear error.
_MOVED = {
    "seglib.config": "seglib.contract.config",
    "seglib.errors": "seglib.contract.errors",
    "seglib.session": "seglib.platform.session",
    "seglib.warehouse": "seglib.platform.warehouse",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        warnings.warn(
            f"{spec.name} is now {_MOVED[spec.name]}; the old path goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module: types.ModuleType) -> None:
        """The module is the moved one, already executed."""


sys.meta_path.append(_MovedModules())


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'seglib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
