"""Files: the package version, atomic writes and reading JSON objects.

Every file ddpm writes (models, checkpoints, schedules, pictures) goes through
:func:`atomic_write`, so an interrupted save leaves the previous file intact;
every config it reads goes through :func:`read_json_object`.  This module
imports nothing from ddpm, so every other module may import it.
"""
from __future__ import annotations

import json
import os
import tempfile

__all__ = ["VERSION", "atomic_write", "write_text", "read_json_object"]

#: The package version (pyproject.toml reads it from here).
VERSION = "0.1.0"


def read_json_object(path, func: str) -> dict:
    """A JSON object from a config file; OSError if missing or not JSON, ValueError if not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError as exc:
        raise OSError(f"{func}(): no {os.path.basename(path)} at {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OSError(f"{func}(): {path} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{func}(): {path} must hold a JSON object")
    return obj


def write_text(path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write(path, write) -> None:
    """write(tmp_path), fsync, then rename over path: a crash leaves the old file."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)                 # mkstemp made it 0600; give it open()'s mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
