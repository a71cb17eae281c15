"""Writes that never leave a half-written file or folder: write to a temporary name in the same folder, then
rename. Also what must never be written (secrets)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Names of values that must never be written to results.json, model cards or tracker configs: a name is a
# run of `_NAME_CHAR`s holding one of these words.
_NAME_CHAR = r"[A-Za-z0-9_.-]"
_SECRET_WORD = r"(?:token|secret|passw(?:or)?d|api[_-]?key|apikey|credential)"
_SECRET_KEY = re.compile(_SECRET_WORD, re.IGNORECASE)
# Inside strings, a secret is recognised by its token prefix (Hugging Face, AWS access key ids, GitHub,
# Slack) or by the name it is given (`WANDB_API_KEY=…`, `"hub_token": "…"`, `--hub_token …`). A bare
# 40-hex string is not a secret by itself: commit ids (e.g. a Hub snapshot in a path) look the same.
_TOKEN_PREFIXED = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|(?:AKIA|ASIA)[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,})\b"
)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@]+(?=@)")  # https://user:token@host, https://token@host
# Every pattern here runs in time linear in the text (a 20 MB string in results.json is scrubbed too). A name
# is tried only where a run of name characters starts (the lookbehind): tried at every position, a run of n
# name characters without a secret word cost n scans of up to n characters, quadratic time.
_NAMED_VALUE = re.compile(
    rf"(?<!{_NAME_CHAR})(?P<name>(?={_NAME_CHAR}*?{_SECRET_WORD}){_NAME_CHAR}+)"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?|\s+)(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)


STAGING_GLOB = ".*.tmp"  # the names `staged_file` and `staged_folder` stage under


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed onto `path` when the block ends without an
    error, removed when it fails. Every file the project writes goes through here or `staged_folder`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        os.chmod(temporary, FILE_MODE)  # mkstemp makes 0600; give the file the usual permissions
        yield Path(temporary)
        _give_usual_mode(Path(temporary))  # some writers replace the file (0600 again)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


@contextmanager
def staged_folder(destination: str | os.PathLike, *, merge: bool = False) -> Iterator[Path]:
    """A private folder beside `destination` to fill; when the block ends without an error it becomes
    `destination` (an old `destination` is replaced whole) or, with `merge`, each of its files replaces its
    namesake in `destination` by an atomic rename (other files there are kept). Removed when the block fails."""
    destination = Path(destination)
    # Merged files stay inside `destination` (a killed save leaves its staging where `STAGING_GLOB` finds it).
    parent = destination if merge else destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=parent))
    try:
        yield staging
        if merge:
            replace_files_from(staging, destination)
        else:
            _give_usual_mode(staging)
            replace_folder(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(staging: Path, destination: Path) -> None:
    """Rename the finished folder `staging` onto `destination`, replacing a folder already there."""
    # A folder cannot be renamed onto a non-empty one: move the old one aside first; a reader sees the old
    # or the new folder, never a mix, and the old one is removed only once the new one is in place.
    if destination.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent))
        os.replace(destination, old / destination.name)
        os.replace(staging, destination)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, destination)


def remove_staging_leftovers(folder: Path) -> None:
    """What killed writes left in `folder`. Call only where no write is in progress (its owner's lock held)."""
    for path in folder.glob(STAGING_GLOB):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with staged_file(path) as temporary, open(temporary, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


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
