"""The wheel as a Databricks Runtime ML user installs it: beside the runtime's own pyspark, pandas, numpy
and pyarrow, which it must neither need to replace nor replace; and every import declared."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Runtime 15.4 LTS ML's versions of the packages that matter here (its release notes); pyspark is any
# 3.5.x other than the pinned stack's, since a runtime's own Spark is never the one pip would pick.
RUNTIME_VERSIONS = {
    "pyspark": "3.5.1",
    "pandas": "1.5.3",
    "numpy": "1.23.5",
    "pyarrow": "14.0.1",
    "scipy": "1.11.1",
    "matplotlib": "3.7.2",
}
# Imported by seglib but provided by the runtime or built by scripts/setup.sh, never by pip's resolver.
NOT_FROM_PIP = {"horovod"}


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def wheel_requirements() -> tuple[set[str], set[str]]:
    """(base requirements, requirements of extras) of the installed seglib, by distribution name."""
    base, extras = set(), set()
    for requirement in metadata.requires("seglib") or []:
        (extras if "extra ==" in requirement else base).add(requirement_name(requirement))
    return base, extras


def imported_top_level_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "seglib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"seglib", "__future__"}


def test_every_import_is_a_declared_dependency_and_spark_delta_mlflow_are_extras():
    base, extras = wheel_requirements()
    distributions = metadata.packages_distributions()
    undeclared = {
        module: distributions.get(module)
        for module in imported_top_level_modules() - NOT_FROM_PIP
        if not {name.lower() for name in distributions.get(module, [module])} & (base | extras)
    }
    assert undeclared == {}
    assert {"pyspark", "delta-spark", "mlflow-skinny"} <= extras
    assert not {"pyspark", "delta-spark", "mlflow-skinny", "mlflow"} & base


@pytest.mark.slow
def test_the_wheel_installs_beside_a_runtimes_pyspark_and_pandas_and_every_module_imports(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            dist,
            ROOT,
        ],
        check=True,
    )
    wheel = next(dist.glob("seglib-*.whl"))
    runtime = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", runtime], check=True)
    python = runtime / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in RUNTIME_VERSIONS.items()]
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins], check=True
    )
    # The rest of the runtime (torch, petastorm, Delta, MLflow, scipy, ...) from this suite's venv, after
    # the runtime's own packages on sys.path, so that those win as on a cluster.
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "zz_rest_of_runtime.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    install = subprocess.run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", wheel],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert "Successfully installed seglib-" in install.stdout
    replaced = "|".join(RUNTIME_VERSIONS)
    assert not re.search(rf"Successfully installed .*\b({replaced})-", install.stdout), install.stdout

    probe = (
        "import importlib, pkgutil, json, pyspark, pandas, numpy, pyarrow, scipy, matplotlib, seglib\n"
        "names = [m.name for m in pkgutil.walk_packages(seglib.__path__, 'seglib.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(json.dumps({'modules': len(names), 'seglib': seglib.__file__, 'pyspark': pyspark.__version__, "
        "'pandas': pandas.__version__, 'numpy': numpy.__version__, 'pyarrow': pyarrow.__version__, "
        "'scipy': scipy.__version__, 'matplotlib': matplotlib.__version__}))"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert {name: report[name] for name in RUNTIME_VERSIONS} == RUNTIME_VERSIONS
    assert (
        report["modules"] == len(list((ROOT / "seglib").rglob("*.py"))) - 1
        and str(runtime) in report["seglib"]
    )
    entry_point = subprocess.run([runtime / "bin" / "seg", "--help"], capture_output=True, text=True)
    assert entry_point.returncode == 0 and "score" in entry_point.stdout
