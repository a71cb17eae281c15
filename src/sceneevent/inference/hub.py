"""Hub uploads of finished run folders.

`push_run_to_hub(run_dir, repo_id)` checks the token and the endpoint first (a few seconds at most),
then uploads weights, config, feature-extractor config, the custom code and a fresh model card
(`model_card.py`). A push that fails leaves the run folder exactly as it was: the card is uploaded from
a staging folder and is written into the run folder only after the upload succeeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..io_utils import atomic_write_text
from .model_card import CARD_FILE, HUB_ID, render_model_card

# What goes to the Hub: weights (safetensors only), configs, the custom code, the card.
UPLOAD_PATTERNS = ["*.safetensors", "model.safetensors.index.json", "config.json", "preprocessor_config.json", "*.py", CARD_FILE]
IGNORE_PATTERNS = ["checkpoints/*", "wandb/*", "*.tmp", ".*"]
# The auth check must answer in seconds: the Hub client itself waits forever by default.
AUTH_TIMEOUT_SECONDS = 10.0


class HubPushError(RuntimeError):
    """A push that cannot start or did not finish (no token, no network, refused by the Hub)."""


def push_run_to_hub(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a run folder (weights, configs, custom code, a fresh model card) to the Hub.

    The token and the endpoint are checked first and fail within seconds. On any failure the run
    folder is left byte-for-byte as it was; after a successful upload its README.md is replaced by
    the card that was pushed.

    Args:
        run_dir: a finished run folder (config.json, model.safetensors, preprocessor_config.json).
        repo_id: `user/name` or `org/name` on the Hub; created if missing.
        private: create the repository as private (an existing repository keeps its visibility).
        revision: branch to push to, created from `main` if missing.
        token: a Hub token; default: `HF_TOKEN` or the stored login.

    Returns:
        The URL of the commit.

    Raises:
        HubPushError: no token, offline mode, the endpoint cannot be reached, or the Hub refused.
        FileNotFoundError: `run_dir` lacks a file the model needs.
    """
    run_dir = Path(run_dir)
    files = _upload_files(run_dir)
    if not repo_id or not HUB_ID.match(repo_id):
        raise ValueError(f"--hub_model_id must look like 'user/name', got {repo_id!r}")
    api, token = _authenticated_api(token)
    card = render_model_card(run_dir, repo_id)
    # Uploaded from a throw-away folder: the run folder's own README.md may be older than `card`.
    with tempfile.TemporaryDirectory(prefix="sceneevent_push_") as folder:
        staging = Path(folder)
        _stage(files, staging)
        atomic_write_text(staging / CARD_FILE, card)
        url = _upload(api, staging, repo_id, private=private, revision=revision, token=token, message=commit_message)
    # Only now does the run folder change: it keeps the card that the Hub shows.
    atomic_write_text(run_dir / CARD_FILE, card)
    return url


def _upload_files(run_dir: Path) -> list[Path]:
    """The files of `run_dir` that go to the Hub (top level only: no checkpoints, no W&B)."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    for required in ("config.json", "preprocessor_config.json"):
        if not (run_dir / required).is_file():
            raise FileNotFoundError(f"{run_dir / required}: not found; push a folder written by train_joint.py or save_pretrained")
    if not any(run_dir.glob("*.safetensors")):
        raise FileNotFoundError(f"{run_dir}: no *.safetensors weights (only safetensors are uploaded)")
    from huggingface_hub.utils import filter_repo_objects

    names = sorted(path.name for path in run_dir.iterdir() if path.is_file() and path.name != CARD_FILE)
    kept = filter_repo_objects(names, allow_patterns=UPLOAD_PATTERNS, ignore_patterns=IGNORE_PATTERNS)
    return [run_dir / name for name in kept]


def _authenticated_api(token: str | None):
    """An HfApi and the token it uses, after a bounded whoami call; HubPushError otherwise."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.utils import build_hf_headers, get_session

    if constants.HF_HUB_OFFLINE:
        raise HubPushError("cannot push: HF_HUB_OFFLINE is set (unset it to upload)")
    token = token or get_token()
    if not token:
        raise HubPushError("cannot push: no Hugging Face token (run `hf auth login` or set HF_TOKEN)")
    api = HfApi(token=token)
    url = f"{api.endpoint}/api/whoami-v2"
    try:
        response = get_session().get(url, headers=build_hf_headers(token=token), timeout=AUTH_TIMEOUT_SECONDS)
    except Exception as error:  # the HTTP client's connect/timeout/proxy errors share no public base class
        raise HubPushError(f"cannot push: the Hub at {api.endpoint} cannot be reached ({type(error).__name__}: {error})") from error
    if response.status_code in (401, 403):
        raise HubPushError(f"cannot push: the Hub at {api.endpoint} rejected the token (HTTP {response.status_code})")
    if response.status_code >= 400:
        raise HubPushError(f"cannot push: {url} answered HTTP {response.status_code}")
    return api, token


def _stage(files: list[Path], staging: Path) -> None:
    # Hard links cost nothing; a copy where the staging folder is on another file system.
    for path in files:
        try:
            os.link(path, staging / path.name)
        except OSError:
            shutil.copy2(path, staging / path.name)


def _upload(api, folder: Path, repo_id: str, *, private: bool, revision: str | None, token: str, message: str | None) -> str:
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=message or "Upload sceneevent model",
            allow_patterns=UPLOAD_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
            token=token,
        )
    except Exception as error:  # HTTP refusals and network errors alike: one clear message, cause chained
        raise HubPushError(f"push to {repo_id} failed ({type(error).__name__}: {error})") from error
    return getattr(commit, "commit_url", None) or str(commit)
