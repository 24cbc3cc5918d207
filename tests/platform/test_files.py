"""The driver's file store: the same answers through Python (local paths) and through Hadoop (remote)."""

from __future__ import annotations

import pytest

from seglib.platform.files import HadoopFiles


@pytest.mark.parametrize("local_paths_in_python", [True, False], ids=["python", "hadoop"])
def test_file_store_operations(spark, tmp_path, local_paths_in_python):
    files = HadoopFiles(spark, local_paths_in_python=local_paths_in_python)
    root = tmp_path / "store"
    uri = root.as_uri()
    assert not files.exists(uri)
    assert files.list_names(uri) == []
    assert files.list_directories(uri) == []
    assert not files.is_empty_directory(uri)

    files.write_text(f"{uri}/b.json", "{}\n")
    files.write_bytes(f"{uri}/a.bin", bytes(range(256)))
    files.write_text(f"{uri}/model/LATEST", "v1")
    files.write_text(f"{uri}/model/LATEST", "v2 ü")
    (root / "empty").mkdir()

    assert files.exists(f"{uri}/a.bin") and files.exists(f"{uri}/model")
    assert files.read_bytes(f"{uri}/a.bin") == bytes(range(256))
    assert files.read_text(f"{uri}/model/LATEST") == "v2 ü"
    assert files.list_names(uri) == ["a.bin", "b.json", "empty", "model"]
    assert files.list_names(f"{uri}/model") == ["LATEST"]
    assert files.list_directories(uri) == ["empty", "model"]
    assert files.is_empty_directory(f"{uri}/empty")
    assert not files.is_empty_directory(f"{uri}/model")
    assert not files.is_empty_directory(f"{uri}/a.bin")
    with pytest.raises(FileNotFoundError):
        files.read_bytes(f"{uri}/missing")

    files.delete(f"{uri}/model")
    files.delete(f"{uri}/a.bin")
    files.delete(f"{uri}/never-there")
    assert files.list_names(uri) == ["b.json", "empty"]
    assert not [path.name for path in root.rglob("*") if ".tmp" in path.name]


def test_local_paths_never_reach_the_jvm(tmp_path):
    """On Databricks /Volumes and /dbfs are local mounts: no gateway call, so no JVM access is needed."""

    class NoSession:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"the session was used ({name})")

    files = HadoopFiles(NoSession())  # type: ignore[arg-type]
    uri = (tmp_path / "volume" / "models").as_uri()
    files.write_text(f"{uri}/LATEST", "v1")
    assert files.exists(f"{uri}/LATEST") and files.read_text(f"{uri}/LATEST") == "v1"
    assert files.list_names(uri) == ["LATEST"] and files.list_directories(tmp_path.as_uri()) == ["volume"]
    files.delete(uri)
    assert not files.exists(uri)
