"""fal's download helpers: fetch a file, model weights or a git repository once, into /data.

Every worker of every app shares the data dir, and several of them often start together and ask
for the same weights. So nothing is ever written in place: a download goes to a hidden temp file
beside its target and is renamed over it when complete (a rename within one directory is atomic),
a clone goes to a hidden temp directory and is renamed into place. A reader sees no file or the
whole file; two workers racing both succeed, and one of the complete copies wins.

``DownloadError`` lives in :mod:`minifal.toolkit.url_fetch` (the layer that fetches) and is
re-exported here, where fal users import it from.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

from minifal.host.data_dir import data_dir
from minifal.toolkit.url_fetch import DownloadError, open_url

__all__ = [
    "FAL_MODEL_WEIGHTS_DIR",
    "FAL_PERSISTENT_DIR",
    "FAL_REPOSITORY_DIR",
    "DownloadError",
    "clone_repository",
    "download_file",
    "download_model_weights",
    "hash_url",
    "write_atomically",
]

# fal's constants, as of import time; the functions below re-read the data dir on every call.
FAL_PERSISTENT_DIR = data_dir()
FAL_MODEL_WEIGHTS_DIR = FAL_PERSISTENT_DIR / ".fal" / "model_weights"
FAL_REPOSITORY_DIR = FAL_PERSISTENT_DIR / ".fal" / "repos"

ONE_MB = 1024 * 1024


def model_weights_dir() -> Path:
    return data_dir() / ".fal" / "model_weights"


def repository_dir() -> Path:
    return data_dir() / ".fal" / "repos"


def write_atomically(target: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to a hidden temp file beside ``target``, then rename it over ``target``.

    If writing fails, the temp file is removed and ``target`` is left as it was.
    """
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def download_file(
    url: str,
    target_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    request_headers: dict[str, str] | None = None,
    filesize_limit: int | None = None,
) -> Path:
    """Download ``url`` into ``target_dir`` (relative: below the data dir) and return its path.

    The name comes from ``Content-Disposition``, else the URL's path, else the URL's sha256. A file
    already there with the size the server announces is kept unless ``force``. ``filesize_limit``
    is in megabytes, as on fal; passing it raises ``FileTooLargeError`` for a bigger file. Any other
    failure raises ``DownloadError`` and leaves nothing behind.
    """
    directory = Path(target_dir)
    if not directory.is_absolute():
        directory = data_dir() / directory
    max_bytes = None if filesize_limit is None else filesize_limit * ONE_MB
    with open_url(url, headers=request_headers) as opened:
        target = directory.resolve() / _local_name(opened.file_name, url)
        if not force and _same_size(target, opened.content_length):
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            write_atomically(target, opened.iter_bytes(max_bytes))
        except OSError as exc:
            raise DownloadError(f"Could not save {url} to {target}: {exc}") from exc
    return target


def download_model_weights(
    url: str,
    force: bool = False,
    request_headers: dict[str, str] | None = None,
) -> Path:
    """Download weights once to ``DATA_DIR/.fal/model_weights/<sha256(url)>/`` and return the file.

    A file already in that directory is returned without touching the network.
    """
    weights_dir = model_weights_dir() / hash_url(url)
    if not force and weights_dir.is_dir():
        present = sorted(
            path
            for path in weights_dir.iterdir()
            if path.is_file() and not path.name.startswith(".")
        )
        if present:
            return present[0]
    return download_file(url, weights_dir, force=force, request_headers=request_headers)


def clone_repository(
    https_url: str,
    *,
    commit_hash: str | None = None,
    target_dir: str | os.PathLike[str] | None = None,
    repo_name: str | None = None,
    force: bool = False,
    include_to_path: bool = False,
) -> Path:
    """Clone a git repository (with submodules) into ``target_dir`` and return the checkout's path.

    ``target_dir`` defaults to ``DATA_DIR/.fal/repos`` so that every worker shares one clone; fal
    clones under ``/tmp`` and caches a zip in ``/data`` instead. A checkout already at
    ``commit_hash`` (or any checkout, without one) is reused unless ``force``. Needs ``git``.
    """
    parent = Path(target_dir) if target_dir is not None else repository_dir()
    if repo_name is None:
        repo_name = Path(urlsplit(https_url).path).stem or hash_url(https_url)
        if commit_hash:
            repo_name += f"-{commit_hash[:8]}"
    checkout = parent / repo_name
    if not force and checkout.is_dir() and _is_checkout_of(checkout, commit_hash):
        return _maybe_on_path(checkout, include_to_path)

    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{repo_name}.", suffix=".clone") as tmp:
        fresh = Path(tmp) / repo_name
        _git("clone", "--recursive", https_url, str(fresh))
        if commit_hash:
            _git("checkout", commit_hash, cwd=fresh)
            _git("submodule", "update", "--init", "--recursive", cwd=fresh)
        with suppress(FileNotFoundError):
            # Move the stale checkout into the temp dir, which deletes it on the way out.
            os.rename(checkout, Path(tmp) / "replaced")
        try:
            os.rename(fresh, checkout)
        except OSError as exc:
            # Another worker renamed its own fresh clone into place first: use that one.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    return _maybe_on_path(checkout, include_to_path)


def _local_name(suggested: str | None, url: str) -> str:
    if suggested and suggested not in (".", ".."):
        return suggested
    return hash_url(url)


def _same_size(target: Path, expected: int | None) -> bool:
    return expected is not None and target.is_file() and target.stat().st_size == expected


def hash_url(text: str) -> str:
    """The SHA-256 of a URL, hex: what its download's directory or file is named."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _git(*args: str, cwd: Path | None = None) -> str:
    """Run git without ever waiting on a credentials prompt; failures become ``DownloadError``."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        )
    except FileNotFoundError:
        raise DownloadError("clone_repository needs git, which is not installed") from None
    except subprocess.CalledProcessError as exc:
        raise DownloadError(f"git {args[0]} failed: {exc.stderr.strip()}") from exc
    return done.stdout.strip()


def _is_checkout_of(checkout: Path, commit_hash: str | None) -> bool:
    try:
        head = _git("rev-parse", "HEAD", cwd=checkout)
        if commit_hash is None:
            return True
        return head == _git("rev-parse", "--verify", f"{commit_hash}^{{commit}}", cwd=checkout)
    except DownloadError:
        return False


def _maybe_on_path(checkout: Path, include_to_path: bool) -> Path:
    if include_to_path and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return checkout
