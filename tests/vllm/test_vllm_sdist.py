"""vllm_sdist: the pinned sdist is verified by sha256, only vLLM's tests/ and pyproject.toml are
extracted, and the cache is reused only when verified. Runs without vLLM (file:// sdists)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from vllm_sdist import KEPT, SDIST_SHA256, SDIST_URL, SdistError, vllm_tests_tree

FILES = {
    "vllm-0.33.0/pyproject.toml": b"[tool.pytest.ini_options]\n",
    "vllm-0.33.0/tests/conftest.py": b"# vLLM's conftest\n",
    "vllm-0.33.0/tests/v1/test_x.py": b"def test_x():\n    pass\n",
    "vllm-0.33.0/vllm/__init__.py": b"raise ImportError('the unbuilt source')\n",
    "vllm-0.33.0/setup.py": b"import torch\n",
    "vllm-0.33.0/testsuite.txt": b"not under tests/\n",
}


def make_sdist(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_files(tree: Path) -> dict[str, bytes]:
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


@pytest.fixture
def sdist(tmp_path: Path) -> tuple[str, str]:
    source = tmp_path / "served" / "vllm-0.33.0.tar.gz"
    source.parent.mkdir()
    return source.as_uri(), make_sdist(source, FILES)


def test_the_pin_is_vllm_0_33_0_from_pypi() -> None:
    assert SDIST_URL.startswith("https://files.pythonhosted.org/packages/")
    assert SDIST_URL.endswith("/vllm-0.33.0.tar.gz")
    assert SDIST_SHA256 == "f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112"
    assert KEPT == ("tests/", "pyproject.toml")


def test_extracts_only_tests_and_pyproject(tmp_path: Path, sdist: tuple[str, str]) -> None:
    url, sha = sdist
    tree = vllm_tests_tree(tmp_path / "cache", url=url, sha256=sha)
    assert tree == tmp_path / "cache" / "src"
    assert tree_files(tree) == {
        "pyproject.toml": b"[tool.pytest.ini_options]\n",
        "tests/conftest.py": b"# vLLM's conftest\n",
        "tests/v1/test_x.py": b"def test_x():\n    pass\n",
    }
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "extracted-from.sha256",
        "src",
        "vllm-0.33.0.tar.gz",
    ]


def test_a_wrong_hash_fails_and_keeps_nothing(tmp_path: Path, sdist: tuple[str, str]) -> None:
    url, sha = sdist
    wrong = "0" * 64
    with pytest.raises(SdistError) as info:
        vllm_tests_tree(tmp_path / "cache", url=url, sha256=wrong)
    assert str(info.value) == (
        f"{url} has sha256 {sha}, not the pinned {wrong} (vLLM 0.33.0's sdist); "
        "the download was discarded"
    )
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_unreachable_url_is_named(tmp_path: Path) -> None:
    url = (tmp_path / "absent.tar.gz").as_uri()
    with pytest.raises(SdistError, match=f"^cannot download {url}: "):
        vllm_tests_tree(tmp_path / "cache", url=url, sha256="0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_verified_cache_is_reused_without_the_network(
    tmp_path: Path, sdist: tuple[str, str]
) -> None:
    url, sha = sdist
    cache = tmp_path / "cache"
    tree = vllm_tests_tree(cache, url=url, sha256=sha)
    (tmp_path / "served" / "vllm-0.33.0.tar.gz").unlink()  # a download would now fail
    assert vllm_tests_tree(cache, url=url, sha256=sha) == tree
    assert tree_files(tree)["tests/v1/test_x.py"] == b"def test_x():\n    pass\n"


def test_a_corrupt_cached_sdist_is_fetched_again(tmp_path: Path, sdist: tuple[str, str]) -> None:
    url, sha = sdist
    cache = tmp_path / "cache"
    tree = vllm_tests_tree(cache, url=url, sha256=sha)
    (cache / "vllm-0.33.0.tar.gz").write_bytes(b"truncated")
    (tree / "tests" / "v1" / "test_x.py").write_bytes(b"edited\n")
    assert vllm_tests_tree(cache, url=url, sha256=sha) == tree
    assert hashlib.sha256((cache / "vllm-0.33.0.tar.gz").read_bytes()).hexdigest() == sha
    assert tree_files(tree)["tests/v1/test_x.py"] == b"def test_x():\n    pass\n"


def test_a_tree_from_another_sdist_is_extracted_again(
    tmp_path: Path, sdist: tuple[str, str]
) -> None:
    url, sha = sdist
    cache = tmp_path / "cache"
    tree = vllm_tests_tree(cache, url=url, sha256=sha)
    (cache / "extracted-from.sha256").write_text("1" * 64)
    (tree / "tests" / "stale.py").write_bytes(b"from another release\n")
    vllm_tests_tree(cache, url=url, sha256=sha)
    assert "tests/stale.py" not in tree_files(tree)
    assert (cache / "extracted-from.sha256").read_text() == sha
