"""Atomic file writes: write to a temporary file in the target folder, then ``os.replace``.

A reader never sees a half-written file and an interrupted job never destroys the previous one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Iterator

import numpy as np


TMP_PREFIX = ".stepwise-tmp-"   # temporary files of atomic writes (a killed writer may leave one)
LOCK_NAME = ".stepwise.lock"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``path`` only when the block finishes without error."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())   # a normal file's mode (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns the absolute path."""
    with atomic_open(path) as f:
        f.write(data)
    return os.path.abspath(os.fspath(path))


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"))


def savez_atomic(path: str | os.PathLike, compressed: bool = False, **arrays) -> str:
    """``np.savez`` (or ``savez_compressed``) to ``path`` atomically."""
    with atomic_open(path, suffix=".npz.tmp") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return os.path.abspath(os.fspath(path))


def jsonable(o):
    """``json.dumps`` fallback: NumPy scalars and arrays as numbers and lists, anything else as text."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def write_json_atomic(path: str | os.PathLike, obj) -> str:
    """``obj`` as indented JSON (NumPy values converted) written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=jsonable) + "\n")


def read_json(path: str | os.PathLike, what: str = "file"):
    """Parsed JSON of ``path``; a missing, empty or malformed file raises ValueError naming it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(f"{what}: {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what}: {path} is a directory, not a JSON file") from None
    if not text.strip():
        raise ValueError(f"{what}: {path} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def open_npz(path: str | os.PathLike, what: str = "file"):
    """``np.load`` of an .npz/.npy without pickles; an unreadable file is a ValueError naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{what}: {os.fspath(path)!r} is not a readable NumPy file ({str(e).split('.')[0]})") from None


def remove_leftovers(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files that killed atomic writers left in ``directory`` (call it while
    holding the directory's lock, so no live writer owns them); returns their names."""
    directory = os.fspath(directory)
    gone = []
    for name in os.listdir(directory):
        if name.startswith(TMP_PREFIX):
            os.remove(os.path.join(directory, name))
            gone.append(name)
    return gone


_LOCKS: dict[str, int] = {}


def lock_directory(directory: str | os.PathLike) -> None:
    """Take an advisory (fcntl) lock on ``directory`` for the rest of this process, or raise
    ValueError naming the process that holds it. The kernel drops the lock when its holder dies, so
    the lock of a killed run is taken over without any cleanup."""
    import fcntl

    directory = os.path.abspath(os.fspath(directory))
    if directory in _LOCKS:
        return
    path = os.path.join(directory, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ValueError(f"workdir: {directory} is in use by pid {holder}; wait for it or choose another "
                         "--workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[directory] = fd


# ----------------------------------------------------------------------------- step checkpoints (orbax)
def _checkpoints(directory: str | os.PathLike, keep: int):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save_step(directory: str | os.PathLike, step: int, arrays, meta: dict, keep: int = 2) -> None:
    """Checkpoint ``step`` of a resumable job: ``arrays`` (a PyTree, orbax ``StandardSave``) and
    ``meta`` (JSON; Python writes floats with repr, so they round-trip exactly); blocks until it is
    on disk. Orbax writes a step to a temporary directory and renames it, so a job killed while
    saving leaves the previous step intact."""
    import orbax.checkpoint as ocp

    mgr = _checkpoints(directory, keep)
    mgr.save(int(step), args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                meta=ocp.args.JsonSave(meta)))
    mgr.wait_until_finished()
    mgr.close()


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest checkpointed step under ``directory`` (None when there is none)."""
    if not os.path.isdir(directory):
        return None
    mgr = _checkpoints(directory, 2)
    step = mgr.latest_step()
    mgr.close()
    return step


def restore_step(directory: str | os.PathLike, template) -> tuple[int, object, dict] | None:
    """(step, arrays, meta) of the newest checkpoint, arrays shaped like ``template`` (a PyTree of
    arrays of the saved structure); None when ``directory`` holds none."""
    import jax
    import orbax.checkpoint as ocp

    if not os.path.isdir(directory):
        return None
    mgr = _checkpoints(directory, 2)
    step = mgr.latest_step()
    if step is None:
        mgr.close()
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    out = mgr.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract),
                                                     meta=ocp.args.JsonRestore()))
    mgr.close()
    return int(step), out["arrays"], out["meta"]
