"""Writes that never leave a half-written file: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

# Names of values that must never be written to results.json, model cards or tracker configs.
_SECRET_NAME = r"[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|apikey|credential)[A-Za-z0-9_.-]*"
_SECRET_KEY = re.compile(_SECRET_NAME, re.IGNORECASE)
# Inside strings, a secret is recognised by its token prefix (Hugging Face, AWS access key ids, GitHub,
# Slack) or by the name it is given (`WANDB_API_KEY=…`, `"hub_token": "…"`, `--hub_token …`). A bare
# 40-hex string is not a secret by itself: commit ids (e.g. a Hub snapshot in a path) look the same.
_TOKEN_PREFIXED = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|(?:AKIA|ASIA)[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,})\b"
)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@]+(?=@)")  # https://user:token@host, https://token@host
_NAMED_VALUE = re.compile(
    rf"(?P<name>{_SECRET_NAME})(?P<sep>[\"']?\s*[=:]\s*[\"']?|\s+)(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, FILE_MODE)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    # os.umask can only be read by setting it: done once, at import, not on every write (another
    # thread creating a file in between would get mode 0666).
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file
FOLDER_MODE = 0o777 & ~_UMASK


def atomic_write_json(path: str | os.PathLike, payload, *, allow_nan: bool = True) -> None:
    """`payload` as indented JSON; `allow_nan=False` refuses NaN/Inf (ValueError) instead of writing invalid JSON."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default, allow_nan=allow_nan) + "\n")


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
        _give_usual_mode(item)
        os.replace(item, destination / item.name)
    shutil.rmtree(staging, ignore_errors=True)


def _give_usual_mode(path: Path) -> None:
    """Permissions from the process umask, as for any file we write: some writers (safetensors via
    a temporary file) leave 0600, and a model folder is meant to be shared."""
    if path.is_symlink():
        return
    if path.is_dir():
        path.chmod(FOLDER_MODE)
        for child in path.rglob("*"):
            if not child.is_symlink():
                child.chmod(FOLDER_MODE if child.is_dir() else FILE_MODE)
    else:
        path.chmod(FILE_MODE)


def scrub_secrets(value):
    """A copy of `value` with the values of secret-named keys, token-prefixed strings and named
    secrets inside strings (`NAME=value`, `NAME: value`, `--name value`) replaced by '***'."""
    if isinstance(value, dict):
        return {key: "***" if _SECRET_KEY.search(str(key)) and item else scrub_secrets(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_secrets(item) for item in value)
    if isinstance(value, str):
        return _scrub_text(value)
    return value


def _scrub_text(text: str) -> str:
    text = _URL_CREDENTIALS.sub("***", _TOKEN_PREFIXED.sub("***", text))
    return _NAMED_VALUE.sub(_mask_named_value, text)


def _mask_named_value(match: re.Match) -> str:
    # `NAME value` (whitespace only) counts for command-line flags with a token-like value only:
    # prose ("pass a token with --hub_token or ...") is kept.
    if not match["sep"].strip() and not (match["name"].startswith("-") and len(match["value"]) >= 8):
        return match[0]
    return f"{match['name']}{match['sep']}***"
