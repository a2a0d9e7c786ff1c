"""vLLM's own tests, taken from the pinned release's source distribution at test time.

Nothing of vLLM's tests is kept in this repository. The sdist is downloaded once, checked
against the sha256 pinned here, and only what running vLLM's tests needs is extracted (its
``tests/`` and ``pyproject.toml``, which holds vLLM's pytest markers) into a cache directory
outside the repository. The tree is not the sdist's root: run there, ``import vllm`` would
find the sdist's unbuilt ``vllm/`` source instead of the installed package.

``pip download`` cannot fetch this sdist (preparing its metadata imports torch), hence the
pinned URL.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VLLM_VERSION = "0.33.0"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/f7/25/"
    "aa5684e9c59d6fc75f78926b7f15e8d9adc7de2d9e6e7575b80776ad8169/vllm-0.33.0.tar.gz"
)
SDIST_SHA256 = "f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112"

# Paths inside the sdist's top directory that the extracted tree keeps.
KEPT = ("tests/", "pyproject.toml")
# Written last into the cache directory: the sha256 of the sdist the tree was extracted from.
_MARKER = "extracted-from.sha256"
_CHUNK = 1 << 20


class SdistError(Exception):
    """The pinned sdist could not be fetched, or is not the one pinned."""


def default_cache_dir() -> Path:
    """``$KVOFF_VLLM_CACHE``, else ``$XDG_CACHE_HOME/kvoff/vllm-<version>`` (``~/.cache``)."""
    explicit = os.environ.get("KVOFF_VLLM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvoff" / f"vllm-{VLLM_VERSION}"


def _ssl_context() -> ssl.SSLContext:
    # The CA bundle pip is told to use, so a proxy that pip trusts is trusted here too.
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: Path, sha256: str) -> None:
    """``url`` into ``dest`` when its sha256 is ``sha256``; otherwise nothing is kept."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        context = _ssl_context() if url.startswith("https:") else None
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, context=context) as resp:
            while block := resp.read(_CHUNK):
                digest.update(block)
                out.write(block)
        got = digest.hexdigest()
        if got != sha256:
            raise SdistError(
                f"{url} has sha256 {got}, not the pinned {sha256} "
                f"(vLLM {VLLM_VERSION}'s sdist); the download was discarded"
            )
        tmp.replace(dest)
    except OSError as e:
        raise SdistError(f"cannot download {url}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _extract(archive: Path, dest: Path) -> None:
    """The ``KEPT`` paths of the sdist's top directory into ``dest`` (replaced whole)."""
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".extract-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                _top, _, inner = m.name.partition("/")
                if any(inner == k or (k.endswith("/") and inner.startswith(k)) for k in KEPT):
                    m.name = inner
                    members.append(m)
            # The "data" filter refuses absolute paths, links out of the tree, device files.
            tar.extractall(staging, members=members, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def vllm_tests_tree(
    cache_dir: Path | None = None, *, url: str = SDIST_URL, sha256: str = SDIST_SHA256
) -> Path:
    """The directory holding vLLM's ``tests/`` and ``pyproject.toml``, fetched if needed.

    A cached sdist is re-hashed on every call; the extracted tree is reused only when it was
    extracted from that same verified sdist. A cached sdist with another hash is fetched again.
    """
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / url.rsplit("/", 1)[-1]
    tree = cache / "src"
    marker = cache / _MARKER
    if not archive.exists() or _sha256_of(archive) != sha256:
        archive.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        _download(url, archive, sha256)
    if not (tree / "tests").is_dir() or not marker.exists() or marker.read_text() != sha256:
        marker.unlink(missing_ok=True)
        _extract(archive, tree)
        marker.write_text(sha256)
    return tree
