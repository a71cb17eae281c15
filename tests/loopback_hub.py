"""A Hugging Face Hub on 127.0.0.1 for the tests: the `olah` server in offline mode over local git repos.

olah (tests/requirements-olah.txt) lives in its own venv, `.venv-olah/` at the repository root (its
fastapi-utils pins psutil < 6, so it cannot share the project's venv); `SCENEEVENT_OLAH` may name the
`olah-cli` executable instead. `.ci/run` builds that venv; tests never install anything themselves.

The server serves every git repository under `mirrors/<models|datasets>/<org>/<name>` (commits on
branch `main`) through the Hub's read API (`/api/...`, `/resolve/...`). It has no upload routes, and
with `offline = true` it answers only for revisions it can resolve locally: `/api/datasets/<id>`
without a revision gives 401 (it would ask huggingface.co for the latest commit), while
`/api/datasets/<id>/revision/main` works.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "tests" / "requirements-olah.txt"
DEFAULT_VENV = ROOT / ".venv-olah"
EXECUTABLE_ENV = "SCENEEVENT_OLAH"
INSTALL_HINT = f"python -m venv .venv-olah && .venv-olah/bin/pip install -r {REQUIREMENTS.relative_to(ROOT)} (what .ci/run does)"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


class LoopbackHubError(RuntimeError):
    """The server could not be started (its log is quoted)."""


def olah_executable() -> Path | None:
    """`$SCENEEVENT_OLAH`, else `.venv-olah/bin/olah-cli`; None when neither exists."""
    named = os.environ.get(EXECUTABLE_ENV)
    if named:
        if not Path(named).is_file():
            raise LoopbackHubError(f"{EXECUTABLE_ENV}={named}: no such file (expected the olah-cli executable)")
        return Path(named)
    default = DEFAULT_VENV / ("Scripts/olah-cli.exe" if os.name == "nt" else "bin/olah-cli")
    return default if default.is_file() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LoopbackHub:
    """One olah process on 127.0.0.1; `start()` it, `publish()` repositories, `stop()` it (by its pid)."""

    def __init__(self, executable: Path, workdir: Path):
        self.executable = Path(executable)
        self.workdir = Path(workdir)
        self.mirrors = self.workdir / "mirrors"
        self.log_path = self.workdir / "olah.log"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.commits: dict[str, str] = {}  # repo id -> sha of its latest published commit

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, attempts: int = 3) -> LoopbackHub:
        self.mirrors.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):  # another process may take the free port before olah binds it
            self.port = free_port()
            config = self.workdir / "olah.toml"
            config.write_text(
                "[basic]\n"
                'host = "127.0.0.1"\n'
                f"port = {self.port}\n"
                f'repos-path = "{self.workdir / "cache"}"\n'
                f'mirrors-path = ["{self.mirrors}"]\n'
                "[accessibility]\n"
                "offline = true\n"
            )
            with open(self.log_path, "ab") as log:
                # cwd: olah writes its own logs/ folder into the working directory.
                self.process = subprocess.Popen(
                    [str(self.executable), "--config", str(config)], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_until_ready():
                return self
            self.stop()
        raise LoopbackHubError(f"olah did not start on 127.0.0.1 ({attempts} attempts); its log ends:\n{self.log_tail()}")

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"{self.endpoint}/api/models/ready/probe/revision/main", timeout=2)
                return True
            except urllib.error.HTTPError:
                return True  # an HTTP answer of any status: the server is up
            except OSError:
                time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Terminate the server by its pid and wait for it; kill it if it does not exit in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    # -- repositories ----------------------------------------------------------------------------------

    def publish(self, repo_type: str, repo_id: str, folder: Path, message: str = "upload") -> str:
        """Commit the files of `folder` to the mirror repository `repo_id` (branch main); the commit sha."""
        if repo_type not in ("model", "dataset"):
            raise ValueError(f"repo_type must be 'model' or 'dataset', got {repo_type!r}")
        repo = self.mirrors / f"{repo_type}s" / repo_id
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q", "-b", "main")
        shutil.copytree(folder, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", message)
        sha = _git(repo, "rev-parse", "HEAD").strip()
        self._record_branch(f"{repo_type}s", repo_id, "main", sha)
        self.commits[repo_id] = sha
        return sha

    def _record_branch(self, repo_type: str, repo_id: str, branch: str, sha: str) -> None:
        """Tell the server where `branch` points, in its own cache format (through olah's own writer).

        Offline, olah resolves a branch name only from its cache. Files that exist are served from the
        git repository at any revision, but a request for a missing file at `main` would be answered
        401 (repository not found) instead of the Hub's 404, and clients that probe optional files
        (transformers asks for processor_config.json) would stop there.
        """
        org, name = repo_id.split("/", 1)
        done = subprocess.run(
            [str(self.executable.parent / "python"), "-c", _RECORD_BRANCH, str(self.workdir / "olah.toml"), repo_type, org, name, branch, sha],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise LoopbackHubError(f"could not record {repo_id}@{branch} = {sha} in olah's cache: {done.stderr.strip()[-2000:]}")

    def client_env(self, hf_home: Path) -> dict[str, str]:
        """Environment of a client process that talks to this server (and to nothing else)."""
        env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        no_proxy = ",".join(filter(None, ["127.0.0.1", "localhost", env.get("NO_PROXY")]))
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HUB_OFFLINE="0",
            HF_DATASETS_OFFLINE="0",
            HF_HOME=str(hf_home),  # a fresh cache: every file comes through the server
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
            NO_PROXY=no_proxy,
            no_proxy=no_proxy,
            WANDB_MODE="offline",
            WANDB_SILENT="true",
        )
        return env


_RECORD_BRANCH = """
import asyncio, sys
from types import SimpleNamespace
from olah.configs import OlahConfig
from olah.utils.repo_utils import record_resolved_commit
config_path, repo_type, org, name, branch, sha = sys.argv[1:]
app = SimpleNamespace(state=SimpleNamespace(app_settings=SimpleNamespace(config=OlahConfig(config_path))))
asyncio.run(record_resolved_commit(app, repo_type, org, name, branch, sha))
"""


def _git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=sceneevent tests", "-c", "user.email=tests@sceneevent.invalid", "-c", "commit.gpgsign=false"]
    done = subprocess.run(["git", *identity, *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise LoopbackHubError(f"git {' '.join(args)} in {repo} failed: {done.stderr.strip()}")
    return done.stdout
