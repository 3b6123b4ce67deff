"""Files that asyncopt writes: model files and checkpoints, arrays plus versioned JSON, no pickle.

One file is one safetensors container: the arrays, and in its header metadata a JSON document
(``{"format": "asyncopt", "kind": ..., "version": ..., "payload": {...}}``) plus a BLAKE2b digest
of the arrays, so a truncated or corrupted file is an error naming the file, not a wrong model.
safetensors stores raw little-endian numbers with a JSON header: reading a file executes no code.

Writes are atomic: the bytes go to a temporary file in the same folder, are fsync'ed, and the
file is renamed over its final name (then the folder is fsync'ed), so a process killed during a
write leaves the previous file as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "asyncopt"
FORMAT_VERSION = 1  # bump when a reader of the old version could misread the new one


class FileFormatError(ValueError):
    """A model or checkpoint file that cannot be used: truncated, corrupted, foreign, or too new."""


def _digest(tensors: dict[str, torch.Tensor], document: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(document.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.view(torch.uint8).reshape(-1).numpy() if t.dtype != torch.bool else t.numpy())
    return h.hexdigest()


def _as_storable(value) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
    return t.detach().to("cpu").contiguous().clone()


def write_file(path: str | os.PathLike, kind: str, payload: dict, arrays: dict) -> Path:
    """Write `arrays` (name -> numpy array or tensor) and the JSON-able `payload` atomically."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {name: _as_storable(a) for name, a in arrays.items()}
    header = {"format": FORMAT, "kind": kind, "version": FORMAT_VERSION, "payload": payload}
    document = json.dumps(header, allow_nan=True)
    meta = {"asyncopt": document, "digest": _digest(tensors, document)}
    data = save(tensors, metadata=meta)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut only once the folder is synced
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    return path


def read_file(path: str | os.PathLike, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(payload, arrays) of a file written by `write_file` with this `kind`; FileFormatError otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise FileFormatError(f"{path}: not an asyncopt {kind} file (only {len(raw)} bytes: empty or truncated)")
    header_len = int.from_bytes(raw[:8], "little")
    if header_len > len(raw) - 8:
        raise FileFormatError(
            f"{path}: not an asyncopt {kind} file, or truncated (header of {header_len} bytes, file of {len(raw)})"
        )
    try:
        header = json.loads(raw[8 : 8 + header_len])
        meta = header.get("__metadata__") or {}
        info = json.loads(meta["asyncopt"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FileFormatError(f"{path}: not an asyncopt {kind} file (no asyncopt header: {exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise FileFormatError(f"{path}: not an asyncopt file (format {info.get('format')!r})")
    if info.get("kind") != kind:
        raise FileFormatError(f"{path}: an asyncopt {info.get('kind')} file, not a {kind} file")
    version = info.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FileFormatError(
            f"{path}: written by a newer asyncopt (file format {version}, this version reads up to "
            f"{FORMAT_VERSION}); upgrade asyncopt to read it"
        )
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise FileFormatError(f"{path}: corrupted or truncated asyncopt {kind} file ({exc})") from None
    if _digest(tensors, meta["asyncopt"]) != meta.get("digest"):
        raise FileFormatError(f"{path}: corrupted asyncopt {kind} file (its contents do not match their checksum)")
    if not isinstance(info.get("payload"), dict):
        raise FileFormatError(f"{path}: corrupted asyncopt {kind} file (no payload)")
    return info["payload"], tensors


# -- checkpoints: a folder of numbered files ---------------------------------------------------
CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX = "checkpoint-", ".safetensors"
KEEP_CHECKPOINTS = 2  # the newest and the one before it


def checkpoint_files(folder: str | os.PathLike) -> list[Path]:
    """Finished checkpoints in `folder`, oldest first (temporary files of a killed write are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        stem = p.name[len(CHECKPOINT_PREFIX) : -len(CHECKPOINT_SUFFIX)]
        if p.name.startswith(CHECKPOINT_PREFIX) and p.name.endswith(CHECKPOINT_SUFFIX) and stem.isdigit():
            found.append((int(stem), p))
    return [p for _, p in sorted(found)]


def write_checkpoint(folder: str | os.PathLike, payload: dict, arrays: dict) -> Path:
    """The next numbered checkpoint in `folder`; older ones beyond KEEP_CHECKPOINTS are removed."""
    existing = checkpoint_files(folder)
    number = int(existing[-1].name[len(CHECKPOINT_PREFIX) : -len(CHECKPOINT_SUFFIX)]) + 1 if existing else 1
    path = write_file(
        Path(folder) / f"{CHECKPOINT_PREFIX}{number:08d}{CHECKPOINT_SUFFIX}", "checkpoint", payload, arrays
    )
    for old in checkpoint_files(folder)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    files = checkpoint_files(folder)
    return files[-1] if files else None


# -- nested state: JSON with the arrays taken out ------------------------------------------------
def split_arrays(tree, prefix: str = "") -> tuple[object, dict[str, torch.Tensor]]:
    """(JSON-able tree, arrays): every ndarray / tensor in nested dicts and lists is replaced by
    {"__array__": name}, the name being its path; `join_arrays` undoes it."""
    arrays: dict[str, torch.Tensor] = {}

    def walk(node, path):
        if isinstance(node, (np.ndarray, torch.Tensor)):
            arrays[path] = _as_storable(node)
            return {"__array__": path}
        if isinstance(node, dict):
            return {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if isinstance(node, np.generic):
            return node.item()
        return node

    return walk(tree, prefix), arrays


def join_arrays(tree, arrays: dict[str, torch.Tensor], as_numpy: bool = False):
    """Put the arrays back into a tree from `split_arrays` (as tensors, or numpy arrays)."""

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"__array__"}:
                t = arrays[node["__array__"]]
                return t.numpy() if as_numpy else t
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(tree)
