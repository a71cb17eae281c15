"""What the report reads of each run: its factors and final (test) metrics, from a results.json or a W&B run.

Each run is one `results.json` (schema_version >= 2) or one W&B run with `test/*` summary keys. Older
results chose their `final` epoch on test data; they are refused (or left out with `skip_old_results`).
Its factors:
- `alpha`: the top-level `alpha` (the value used, also for `--alpha auto`).
- `mode`: `config.mode` ("pretrain_finetune"), else "joint".
- `k`, `hours` (T), `strategy`: `data.aet_subset` when the run recorded it, else parsed from the name of the
  `config.aet_dataset` folder: `k=35`, `hours=90` (or `T=90`), `strategy_random` (or `strategy=random`).
  An alpha = 0 run uses no event data, so its event factors are unknown and match any slice; likewise
  the alpha of a pretrain_finetune run (its stages are single-task).
Runs with the same configuration and seed (a copied run folder) are one measurement (`drop_duplicates`), unless
they recorded different event subsets. The scene regularisation (`regularisation`) and the clips per batch are read
from the config too: the paper's figures draw the runs at the default regularisation, the regulariser comparison
and the tuned control the others.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.results import RESULTS_FILE, VALIDATION_SELECTION_SCHEMA, FinalMetrics, ResultsError, RunResults, read_results
from .regularisation import TRAINING_DEFAULTS, regularisation_label, regularisation_of

logger = logging.getLogger(__name__)

METRICS = {"asc_macro_accuracy": "scene macro accuracy", "aet_lwlrap": "event lwlrap"}
FULL_EVENT_SET = "all classes"  # the strategy of a run on a whole event source (no subset)
_K = re.compile(r"(?:^|[^A-Za-z])k=(\d+)")
_HOURS = re.compile(r"(?:^|[^A-Za-z])(?:hours|T)=(\d+(?:\.\d+)?)")
_STRATEGY = re.compile(r"strategy[_=](random|correlated|uncorrelated|speech_music)")

# Where and how a run was written or logged: two runs that differ only here are the same measurement.
OUTPUT_FIELDS = frozenset({
    "output_dir", "overwrite_output_dir", "run_name", "report_to", "wandb_project", "logging_steps",
    "resume_from_checkpoint", "checkpointing_steps", "save_total_limit",
    "push_to_hub", "hub_model_id", "hub_private", "hub_revision",
})
# How a run computed, not what it measured: compared runs should agree on these (compiled and eager, or bf16 and
# fp32, arithmetic differ, so part of a difference between such runs would be theirs, not the setting's).
ARITHMETIC_FIELDS = ("device", "torch_compile", "torch_compile_mode", "channels_last", "mixed_precision")
OLD_RESULTS_WHY = (
    "predate results schema_version 2: their `final` is the epoch with the best *test* score (chosen on test "
    "data, so optimistic). Re-run them"
)


class OldResultsError(ValueError):
    """Results whose `final` was selected on test data (schema_version < 2)."""


@dataclass
class RunReading:
    """The factors and final (test) metrics of one run."""

    source: str
    seed: int | None
    alpha: float | None
    mode: str
    k: int | None
    hours: float | None
    strategy: str | None
    asc_macro_accuracy: float | None
    aet_lwlrap: float | None
    task_gradients: list[dict] = field(default_factory=list)
    identity: str = ""  # the configuration (less OUTPUT_FIELDS) and seed: equal for copies of one run
    best_epoch: int | None = None  # the epoch selected on validation
    event_draw: str | None = None  # the event subset's folder: runs that share it trained on one draw of the data
    arithmetic: dict = field(default_factory=dict)  # ARITHMETIC_FIELDS as the run used them (None: not recorded)
    event_subset: dict | None = None  # `data.aet_subset` as the run recorded it (None: not recorded, as from W&B)
    floor_asc_macro_accuracy: float | None = None  # the run's floor (training/floor.py) on the same test split
    regularisation: dict = field(default_factory=lambda: dict(TRAINING_DEFAULTS))  # regularisation.REGULARISATION_FLAGS
    asc_batch_size: int | None = None  # scene clips per training batch (None: not recorded)
    aet_batch_size: int | None = None

    @property
    def regularisation_label(self) -> str:
        """`defaults`, a preset of the regulariser comparison (`none`, `dropout`, ..., `all`) or `custom`."""
        return regularisation_label(self.regularisation)

    def factor(self, name: str) -> Any:
        value = getattr(self, name)
        if name == "alpha" and self.mode == "pretrain_finetune":
            return None  # its two stages do not weight the tasks by alpha: not in the alpha figure, any mode slice
        # Speech + Music is how the k = 2 set is drawn; in the k slice it stands with the random sets.
        return "random" if name == "strategy" and value == "speech_music" else value


def run_from_results(results: RunResults, source: str) -> RunReading:
    """The factors and metrics of one run's results; OldResultsError if `final` was chosen on test data."""
    if not results.selected_on_validation:
        raise OldResultsError(f"{source}: results {OLD_RESULTS_WHY}")
    config, final = results.config, results.final
    alpha = _number(results.alpha if results.alpha is not None else config.get("alpha"))
    mode = config.get("mode") or "joint"
    seed = results.seed if results.seed is not None else config.get("seed")
    # A pre-trained-then-fine-tuned run saw its event data in stage 1 (recorded under "pretrain").
    stage_one = (results.pretrain or {}).get("data") if mode == "pretrain_finetune" else None
    data = stage_one or results.data
    k, hours, strategy = event_factors(data, config) if alpha != 0.0 or mode == "pretrain_finetune" else (None, None, None)
    gradients = [entry for epoch in results.history for entry in (epoch.get("task_gradients") or [])]
    return RunReading(
        source=source, seed=seed, alpha=alpha, mode=mode, k=k, hours=hours, strategy=strategy,
        asc_macro_accuracy=_number(final.asc_macro_accuracy), aet_lwlrap=_number(final.aet_lwlrap),
        task_gradients=gradients, identity=run_identity(config, seed, alpha), event_subset=data.get("aet_subset"),
        best_epoch=final.best_epoch if _is_number(final.best_epoch) else None,
        event_draw=_event_draw(config) if strategy not in (None, FULL_EVENT_SET) else None,
        arithmetic=_arithmetic(results), floor_asc_macro_accuracy=_number(final.floor_asc_macro_accuracy),
        regularisation=regularisation_of(config), asc_batch_size=_count(config.get("asc_batch_size")),
        aet_batch_size=_count(config.get("aet_batch_size")),
    )


def _count(value: Any) -> int | None:
    return int(value) if _is_number(value) and float(value).is_integer() else None


def _arithmetic(results: RunResults) -> dict:
    """ARITHMETIC_FIELDS of one run's results (None where it does not record one)."""
    config, environment = results.config, results.environment
    device = environment.get("device")
    return {
        "device": str(device).split(":")[0] if device else None,  # cpu, cuda
        "torch_compile": config.get("torch_compile"),
        "torch_compile_mode": config.get("torch_compile_mode") if config.get("torch_compile") else None,  # unused then
        "channels_last": config.get("channels_last"),
        # the precision Accelerate resolved (the flag may be None: then `accelerate config` decided)
        "mixed_precision": environment.get("mixed_precision", config.get("mixed_precision")),
    }


def arithmetic_differences(runs: list[RunReading]) -> str:
    """The ARITHMETIC_FIELDS on which `runs` disagree, e.g. "torch_compile: False vs True" ('' if none)."""
    differing = []
    for name in ARITHMETIC_FIELDS:
        values = sorted({str(run.arithmetic.get(name)) for run in runs if run.arithmetic.get(name) is not None})
        if len(values) > 1:
            differing.append(f"{name}: {' vs '.join(values)}")
    return "; ".join(differing)


def _event_draw(config: dict) -> str | None:
    """Which drawn event subset a run trained on: its folder (one folder holds one draw)."""
    folder = config.get("aet_dataset")
    return None if folder is None else str(folder).rstrip("/")


def run_identity(config: dict, seed: Any, alpha: float | None) -> str:
    """What makes two runs the same measurement: the configuration less OUTPUT_FIELDS, the seed and alpha."""
    kept = {key: value for key, value in config.items() if key not in OUTPUT_FIELDS}
    return json.dumps({**kept, "seed": seed, "alpha": alpha}, sort_keys=True, default=str)


def event_factors(data: dict, config: dict) -> tuple[int | None, float | None, str | None]:
    subset = data.get("aet_subset") or {}
    name = str(config.get("aet_dataset") or "").rstrip("/").rsplit("/", 1)[-1]
    k = subset.get("k") if subset.get("k") is not None else _match(_K, name, int)
    hours = subset.get("hours") if subset.get("hours") is not None else _match(_HOURS, name, float)
    strategy = subset.get("strategy") or _match(_STRATEGY, name, str)
    if k is None and hours is None and strategy is None:
        # Not a subset: the source's whole event set. It is its own setting, not a wildcard, so these runs
        # never stand in for a subset in another factor's slice.
        k = len(data.get("event_labels") or []) or None
        strategy = FULL_EVENT_SET
    return (int(k) if k is not None else None), (float(hours) if hours is not None else None), strategy


def _match(pattern: re.Pattern, text: str, kind: type) -> Any:
    found = pattern.search(text)
    return kind(found.group(1)) if found else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


# --- reading a folder of runs or a W&B project --------------------------------------------------------


def find_results(root: str | Path) -> list[Path]:
    """Every results.json below `root` (hidden folders, e.g. staging, are left out)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"runs folder {root}: no such folder")
    return sorted(p for p in root.rglob(RESULTS_FILE) if not any(part.startswith(".") for part in p.relative_to(root).parts))


def load_runs(root: str | Path, skip_old_results: bool = False) -> list[RunReading]:
    """Every run below `root`; an unreadable results.json is reported and left out.

    Results older than schema_version 2 raise OldResultsError naming every such file, or with
    `skip_old_results` are left out with a warning that names them.
    """
    runs, old = [], []
    for path in find_results(root):
        try:
            results = read_results(path, require_validation_selection=False)  # old ones are refused all at once, below
            if results.config.get("mode") == "pretrain":
                continue  # stage 1 of a pre-train-then-fine-tune run, reported through its parent
            runs.append(run_from_results(results, str(path.parent)))
        except OldResultsError:
            old.append(str(path))
        except ResultsError as error:  # it names the file
            logger.warning("skipping %s", error)
        except (OSError, TypeError, ValueError, AttributeError) as error:
            logger.warning("skipping %s: %s", path, error)
    refuse_old_results(old, skip_old_results)
    return runs


def refuse_old_results(sources: list[str], skip: bool) -> None:
    """Raise OldResultsError naming every old result, or with `skip` warn that they are left out."""
    if not sources:
        return
    listing = "\n  ".join(sources)
    if skip:
        logger.warning("left out %d run(s) that %s:\n  %s", len(sources), OLD_RESULTS_WHY, listing)
        return
    raise OldResultsError(f"{len(sources)} run(s) {OLD_RESULTS_WHY}, or pass --skip_old_results to leave them out:\n  {listing}")


def load_wandb_runs(project: str, timeout: int = 30, skip_old_results: bool = False) -> list[RunReading]:
    """Finished runs of a W&B project ("entity/project"), from their config and `test/*` summary values.

    A run without `test/*` keys was logged before validation-based selection and is refused like an old
    results.json (see `load_runs`).
    """
    try:
        import wandb

        api = wandb.Api(timeout=timeout)
        wandb_runs = list(api.runs(project, filters={"state": "finished"}))
    except Exception as error:  # offline, no login, unknown project: say so instead of a traceback
        raise RuntimeError(f"--wandb_project {project}: could not read runs from W&B ({type(error).__name__}: {error})") from error
    runs, old = [], []
    for wandb_run in wandb_runs:
        config = {key: value for key, value in dict(wandb_run.config).items() if not key.startswith("_")}
        summary = dict(wandb_run.summary)
        path = getattr(wandb_run, "path", None)
        source = "wandb:" + ("/".join(path) if isinstance(path, (list, tuple)) else str(path or wandb_run.id))
        if config.get("mode") == "pretrain":
            continue
        if not any(key.startswith("test/") for key in summary):
            old.append(source)
            continue
        final = FinalMetrics(asc_macro_accuracy=summary.get("test/asc_macro_accuracy"), aet_lwlrap=summary.get("test/aet_lwlrap"),
                             floor_asc_macro_accuracy=summary.get("test/floor_asc_macro_accuracy"))
        results = RunResults(schema_version=VALIDATION_SELECTION_SCHEMA, config=config, alpha=config.get("alpha"),
                             seed=config.get("seed"), final=final)
        runs.append(run_from_results(results, source))
    refuse_old_results(old, skip_old_results)
    return runs


def drop_duplicates(runs: list[RunReading]) -> tuple[list[RunReading], dict[str, list[str]]]:
    """The runs with each measurement once (the first seen), and per kept source the sources dropped as its copies.

    A copy has the identity of a kept run and its event subset: one `--aet_dataset` folder rebuilt with another
    strategy, k or draw between two runs gives two measurements that the configuration cannot tell apart. A run
    that recorded no subset (read from W&B) is a copy of the first run of its identity, as when one run is read
    from its folder and from W&B."""
    kept: dict[str, list[RunReading]] = defaultdict(list)
    copies: dict[str, list[str]] = defaultdict(list)
    unique = []
    for run in runs:
        first = next((other for other in kept[run.identity] if None in (other.event_subset, run.event_subset)
                      or other.event_subset == run.event_subset), None)
        if first is None:
            kept[run.identity].append(run)
            unique.append(run)
        else:
            copies[first.source].append(run.source)
    return unique, dict(copies)
