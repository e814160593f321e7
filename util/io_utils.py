"""Atomic file writes (temp name in the same directory, then os.replace) and mkdir.

A reader never sees a half-written file: the data goes to a hidden temporary
name `.<name>.tmp-<pid>-<random>` next to the target and is renamed over it only
once complete. A crash leaves at most that temporary file behind, never a
truncated target. `TEMP_MARKER` lets tools recognise such leftovers.
"""

import contextlib
import hashlib
import json
import os
import pickle
import re
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

TEMP_MARKER = ".tmp-"


class OutputError(OSError):
    """An output could not be written: disk full, file-size limit or quota reached,
    read-only or missing directory. The message names the path, the cause and the way
    out; the file or checkpoint that was there before is unchanged (atomic writes)."""


def error_text(error: BaseException) -> str:
    """The reason in an OSError ("No space left on device") or a tf.errors.OpError,
    without TF's "{{function_node ...}}" prefix, "[Op:...]" suffix or file name."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text).split(" [Op:")[0]
    return text.rsplit("; ", 1)[-1].strip()  # TF's write errors: "<path>; <reason>"


def output_error(path: str | os.PathLike, error: BaseException,
                 action: str = "write") -> OutputError:
    """OutputError for a failed `action` ("write", "create the directory") on `path`."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    return OutputError(
        f"Cannot {action} {os.fspath(path)}: {error_text(error)}. What was there before is "
        f"unchanged; free space in (or fix the permissions of) {directory} and re-run the "
        "same command (training continues from the last complete checkpoint).")


def mkdir(path: str | os.PathLike) -> None:
    """Creates `path` and its parents if missing.

    Raises:
      OutputError: it cannot be created (read-only parent, a file in the way, ...).
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OutputError:
        raise
    except OSError as e:
        raise output_error(path, e, "create the directory") from None


def temp_name_for(path: str | os.PathLike) -> str:
    """A unique hidden temporary path in the same directory as `path`."""
    directory, name = os.path.split(os.fspath(path))
    unique = f"{os.getpid()}-{secrets.token_hex(4)}"
    return os.path.join(directory, f".{name}{TEMP_MARKER}{unique}")


def is_temp_name_for(file_name: str, target_name: str) -> bool:
    """Whether `file_name` is a temporary name made by temp_name_for(target_name)."""
    return file_name.startswith(f".{target_name}{TEMP_MARKER}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path to write; renames it to `path` if the block succeeds.

    On an exception the temporary file is removed and the target is left as it was.
    The parent directory is created if needed.
    """
    directory = os.path.dirname(os.fspath(path))
    if directory:
        mkdir(directory)
    temp = temp_name_for(path)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Yields a new hidden temporary directory; if the block succeeds its files are
    fsynced and it replaces the directory `path` (created or swapped in whole).

    rename(2) cannot replace a non-empty directory, so an existing `path` is first moved
    aside to a hidden name: a crash in between leaves it there, never a half-written
    `path`. On an exception the temporary directory is removed and `path` is untouched.
    """
    path = os.path.abspath(os.fspath(path))
    mkdir(os.path.dirname(path))
    temp = temp_name_for(path)
    os.mkdir(temp)
    try:
        yield temp
        for root, _, files in os.walk(temp):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
        if not os.path.isdir(path):
            os.rename(temp, path)
            return
        old = temp_name_for(path)
        os.rename(path, old)
        try:
            os.rename(temp, path)
        except OSError:
            os.rename(old, path)
            raise
        shutil.rmtree(old)
    finally:
        if os.path.exists(temp):
            shutil.rmtree(temp)


def _write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Raises OutputError (the old file kept) when the write fails."""
    try:
        with atomic_path(path) as temp:
            with open(temp, "wb") as f:
                f.write(data)
                f.flush()
                # Make the content durable before the rename publishes it.
                os.fsync(f.fileno())
    except OutputError:
        raise
    except OSError as e:
        raise output_error(path, e) from None


def write_text(text: str, path: str | os.PathLike) -> None:
    """Atomically writes `text` as UTF-8 to `path` (OutputError if that fails)."""
    _write_bytes(text.encode("utf-8"), path)


def write_json(obj: Any, path: str | os.PathLike, indent: int | None = None) -> None:
    """Atomically writes `obj` as UTF-8 JSON followed by a newline."""
    write_text(json.dumps(obj, indent=indent) + "\n", path)


def write_pickle(obj: Any, path: str | os.PathLike) -> None:
    """Atomically pickles `obj` to `path` with the highest protocol."""
    _write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), path)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_pickle(path: str | os.PathLike) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)
