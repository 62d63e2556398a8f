"""Safe file I/O shared by every writer in the kit: atomic writes, checked npz loading, hashes.

A crash or a kill in the middle of a write must never leave a file that a reader accepts, so
every write goes to a temporary file in the destination folder and is renamed into place
(``os.replace`` is atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np


class DataFormatError(ValueError):
    """A file on disk is missing, truncated, corrupted or does not have the expected content."""


def check_relative_path(relative: Any, what: str) -> str:
    """Returns ``relative`` after checking that it is a relative path that cannot climb out of its folder.

    For paths read from files (a manifest's ``file``, an id that names ``<id>.npz``): a non-empty
    string, not absolute (POSIX or Windows style) and without a ``..`` component. Raises
    ``DataFormatError`` naming ``what``. Symlinks are checked by ``confined_path``.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise DataFormatError(f"{what}: expected a non-empty relative path, got {relative!r}")
    parts = relative.replace("\\", "/").split("/")
    absolute = PurePosixPath(relative).is_absolute() or bool(PureWindowsPath(relative).anchor)
    if absolute or ".." in parts or "\0" in relative:
        raise DataFormatError(
            f"{what}: {relative!r} is not a relative path inside its folder "
            "(expected e.g. 'clips/<id>.npz': no absolute path, no '..')"
        )
    return relative


def confined_path(root: str | os.PathLike, relative: Any, what: str) -> Path:
    """Returns ``root / relative`` after checking that it stays inside ``root``, symlinks followed.

    Every path read from a file (manifest entries, ids that name files) goes through here, so a
    dataset or predictions folder from elsewhere can never make the kit read or write outside
    it: ``relative`` must pass ``check_relative_path``, and the resolved path (following any
    symlink on the way) must lie under the resolved ``root``. Raises ``DataFormatError`` naming
    ``what`` otherwise. The file need not exist.
    """
    check_relative_path(relative, what)
    root = Path(root)
    path = root / relative
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise DataFormatError(f"{what}: cannot resolve {path} ({exc})") from exc
    if not inside:
        raise DataFormatError(
            f"{what}: {path} leads outside {root} (a symlink pointing out of the folder); "
            "expected a file inside the folder"
        )
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: readers see the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | os.PathLike, frame: Any, float_format: str | None = None) -> None:
    """Writes a pandas ``frame`` as CSV (no index) atomically, gzip-compressed when ``path`` ends in
    ``.gz``; the gzip header carries no time stamp, so the same rows give the same bytes."""
    import gzip

    data = frame.to_csv(index=False, float_format=float_format).encode("utf-8")
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    atomic_write_bytes(path, data)


def save_npz(path: str | os.PathLike, arrays: dict[str, Any], compress: bool = True) -> str:
    """Writes ``arrays`` as an ``.npz`` atomically and returns the sha256 of the written bytes.

    Strings become 0-d unicode arrays and dicts become JSON strings, so files load with
    ``allow_pickle=False`` (never unpickle data files).
    """
    buffer = io.BytesIO()
    packed = {key: _pack(key, value) for key, value in arrays.items()}
    (np.savez_compressed if compress else np.savez)(buffer, **packed)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _pack(key: str, value: Any) -> np.ndarray:
    if isinstance(value, str):
        return np.array(value)
    if isinstance(value, dict):
        return np.array(json.dumps(value, sort_keys=True))
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"{key}: object arrays cannot be stored safely; got {type(value).__name__}")
    return array


def load_npz(path: str | os.PathLike, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Returns every array of an ``.npz`` file, fully read, or raises ``DataFormatError``.

    The whole file is decompressed here so that truncation or corruption is reported at load
    time with the file's name, not later as an obscure zlib error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataFormatError(f"{path}: not a readable .npz file (truncated or corrupted?): {exc}") from exc
    missing = [key for key in required if key not in arrays]
    if missing:
        raise DataFormatError(f"{path}: missing arrays {missing}; found {sorted(arrays)}")
    return arrays


def unpack_str(array: np.ndarray) -> str:
    """Returns the Python string stored by ``save_npz`` for a str value."""
    return str(array[()])


def unpack_json(array: np.ndarray) -> Any:
    """Returns the object stored by ``save_npz`` for a dict value."""
    return json.loads(str(array[()]))


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Returns the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
