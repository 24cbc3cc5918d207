"""The shape of the code itself: short functions, and a config that validates without Spark or torch.
The layer order of the packages is checked by import-linter (pyproject.toml, run by .ci/run)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "seglib"
MAX_FUNCTION_LINES = 60


def test_no_function_in_seglib_is_longer_than_the_bar():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)"
                    )
    assert long == [], "split these along their phases:\n" + "\n".join(long)


def test_every_layer_says_what_it_holds():
    for package in sorted(path for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()):
        docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert docstring and len(docstring) > 40, f"{package.name}/__init__.py needs a docstring"


def test_validating_a_config_imports_neither_spark_nor_torch():
    probe = (
        "import sys; from seglib.contract.config import load_config; from seglib.contract.artifacts import Artifacts; "
        "config = load_config('conf/default.yaml'); Artifacts.from_config(config); import seglib; seglib.SeglibConfig; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'torch', 'horovod', 'petastorm', 'mlflow'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_moved_module_paths_still_import_for_one_release_with_a_warning():
    import importlib

    import pytest

    import seglib.platform.session

    with pytest.warns(DeprecationWarning, match="seglib.session is now seglib.platform.session"):
        old = importlib.import_module("seglib.session")
    assert old is seglib.platform.session
