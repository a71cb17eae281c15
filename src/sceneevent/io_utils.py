"""Writes that never leave a half-written file: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

# Names of values that must never be written to results.json, model cards or tracker configs.
_SECRET_KEY = re.compile(r"(token|secret|password|api_key|apikey|credential)", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|[0-9a-f]{40})\b")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_json(path: str | os.PathLike, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def replace_files_from(staging: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Move every file of `staging` into `destination` (each by an atomic rename), then remove `staging`."""
    staging, destination = Path(staging), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        os.replace(item, destination / item.name)
    shutil.rmtree(staging, ignore_errors=True)


def scrub_secrets(value):
    """A copy of `value` with secret-looking keys and token-looking strings replaced by '***'."""
    if isinstance(value, dict):
        return {key: "***" if _SECRET_KEY.search(str(key)) and item else scrub_secrets(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_secrets(item) for item in value)
    if isinstance(value, str):
        return _SECRET_VALUE.sub("***", value)
    return value
