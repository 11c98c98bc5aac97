"""Files: the package version, safe reading, atomic writes and JSON.

Reading.  Every file ddpm reads (configs, IDX data, weights, checkpoints,
feature statistics) is opened by :func:`open_regular`, which refuses what is
not a regular file (a FIFO would block forever, ``/dev/zero`` never ends) and
files over a size cap, and every JSON text goes through :func:`loads_json`, so
deeply nested or malformed JSON is an ``OSError``/``ValueError`` naming the
file, never a ``RecursionError``.

Writing.  Every file ddpm writes (models, checkpoints, schedules, pictures)
goes through :func:`atomic_write`: the bytes go to a temporary file beside the
target, named ``.<name>.<pid>-<random>.ddpm-tmp``, which is fsynced and renamed
over the target, so an interrupted save leaves the previous file intact.  The
next save of the same name removes the temporary files of saves that were
killed (their process is gone).  Files are created with mode 0o666 minus the
umask, as ``open()`` creates them.  :func:`new_dirs` creates a save's folders
and removes them again if the save fails (a full disk leaves nothing behind).

This module imports nothing from ddpm, so every other module may import it.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import time

__all__ = ["VERSION", "atomic_write", "write_text", "read_json_object", "loads_json",
           "open_regular", "new_dirs", "TMP_SUFFIX", "MAX_JSON_BYTES"]

#: The package version (pyproject.toml reads it from here).
VERSION = "0.1.0"

#: The largest JSON file ddpm reads (a config with a million class names fits).
MAX_JSON_BYTES = 64 << 20
#: How every temporary file of :func:`atomic_write` ends.
TMP_SUFFIX = ".ddpm-tmp"
# temporary files of ddpm < 0.1.1 (tempfile.mkstemp, ".tmp-XXXXXXXX<name>") are removed
# when older than this many seconds: no save takes that long between create and rename
_LEGACY_TMP_AGE = 3600.0


# ------------------------------------------------------------------------- reading
def open_regular(path, func: str, what: str = "file", max_bytes: int | None = None):
    """``(f, size)``: ``path`` opened for binary reading, and its size in bytes.

    Refuses (OSError) a path that is not a regular file: a directory, a FIFO
    (which would block until a writer comes), a device such as ``/dev/zero``
    (which never ends) or a socket.  The file is opened without blocking and
    checked with ``fstat`` on the open descriptor, so what is checked is what
    is read.  ``max_bytes``: refuse (ValueError) a larger file.
    FileNotFoundError (an OSError) names ``what`` when the path is missing.
    """
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{func}(): no {what} at {path}") from exc
    except OSError as exc:
        raise OSError(f"{func}(): cannot open {what} {path}: {exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise OSError(f"{func}(): {what} {path} is {kind} (a folder, pipe, device or "
                          f"socket); refusing to read it")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ValueError(f"{func}(): {what} {path} is {st.st_size:,} bytes, over the "
                             f"{max_bytes:,}-byte limit for such a file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f, st.st_size


def read_exactly(f, n: int, path, func: str, what: str = "data") -> bytes:
    """n bytes from f, or OSError naming the file when it ends first."""
    data = f.read(n)
    if len(data) != n:
        raise OSError(f"{func}(): {path} is truncated ({what}: {len(data)} of {n} bytes)")
    return data


def loads_json(text, func: str, where: str, exc_type=OSError):
    """json.loads(text); malformed, over-nested or undecodable text raises exc_type
    (default OSError) with a message naming ``where``."""
    try:
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8")
        return json.loads(text)
    except RecursionError:
        raise exc_type(f"{func}(): {where} is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:   # JSONDecodeError is a ValueError
        raise exc_type(f"{func}(): {where} is not valid JSON: {exc}") from exc


def read_json_object(path, func: str, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """A JSON object from a config file.

    OSError if missing, not a regular file or not JSON; ValueError if over
    ``max_bytes`` or not an object.
    """
    path = os.fspath(path)
    f, _ = open_regular(path, func, os.path.basename(path), max_bytes)
    with f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:            # grew since fstat
        raise ValueError(f"{func}(): {path} is over the {max_bytes:,}-byte limit")
    obj = loads_json(raw, func, path)
    if not isinstance(obj, dict):
        raise ValueError(f"{func}(): {path} must hold a JSON object")
    return obj


# ------------------------------------------------------------------------- writing
def write_text(path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True          # someone else's process (or not a pid): leave its file alone
    return True


def remove_orphans(folder: str, name: str) -> int:
    """Remove the temporary files that killed saves of ``folder/name`` left; how many.

    Ours (``.<name>.<pid>-<hex>.ddpm-tmp``) go when their process is gone; those of
    older versions (``.tmp-<8 chars><name>``) when older than an hour.  POSIX only:
    elsewhere nothing is removed.
    """
    if os.name != "posix":
        return 0
    try:
        entries = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    ours = f".{name}."
    now = time.time()
    for entry in entries:
        full = os.path.join(folder, entry)
        if entry.startswith(ours) and entry.endswith(TMP_SUFFIX):
            pid = entry[len(ours):-len(TMP_SUFFIX)].split("-", 1)[0]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
        elif entry.startswith(".tmp-") and entry.endswith(name) and \
                len(entry) == len(".tmp-") + 8 + len(name):
            try:
                if now - os.lstat(full).st_mtime < _LEGACY_TMP_AGE:
                    continue
            except OSError:
                continue
        else:
            continue
        try:
            os.unlink(full)
            removed += 1
        except OSError:
            pass
    return removed


def atomic_write(path, write) -> None:
    """write(tmp_path), fsync, then rename over path: a crash leaves the old file.

    The temporary file is created (empty, mode 0o666 minus the umask) before
    ``write`` opens it by name; it is removed if anything fails, and a later save
    of the same path removes it if the process was killed.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    remove_orphans(folder, name)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 0o666)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def new_dirs(path):
    """Create the folder ``path`` and its missing parents; if the block raises, remove
    the folders this call created (with what the block wrote in them), then re-raise.

    So a save that fails (a full disk, Ctrl-C) leaves no empty model folder behind;
    folders that existed before are never touched.
    """
    path = os.path.abspath(os.fspath(path))
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    except BaseException:
        if missing:                      # the top-most folder this call made, and all below
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise
