"""The paper's study (Parikh et al., Interspeech 2022) on real data: which sweeps each figure needs, the event
sets they train on, the event-only tagger whose ranking gives the correlated and uncorrelated sets, and the
stages that build, train and report them (`scripts/reproduce_paper.py`).

The sweep files (`sweeps/*.yaml`) are the study: one per figure, each a grid of settings x 4 seeds, 152 runs
in all (80 + 12 + 24 + 28 + 8), on 14 event sets named `k=<k>_hours=<T>_strategy_<strategy>`. Sixteen of those
runs are one setting drawn in two figures: joint training at alpha = 0.95 on the reference set (k = 115,
T = 90 h, random) is a point of Figures 2, 3b, 4 and 5, and k = 35 random a point of Figures 3a and 4. The
report counts such a run once and draws it in every figure whose slice holds it (`factors.factor_slice` slices
by setting, not by sweep), so the study trains each setting once: 136 trainings for the 152 runs. A shared
setting is dropped from the later figure's grid (`share_grid_points`), which keeps each grid a grid, so a W&B
sweep leaves it out too.

Stages, each skipping what is already there (so the command resumes wherever it stopped):
1. the event sets that need no ranking, each written whole (`save_aet_subset`, staged then renamed);
2. the tagger: the reference sweep's alpha = 1 run of the first seed (a run of Figure 2's grid, in its folder);
3. the ranking of its event classes on the scene training clips (`data.ranking`), written atomically;
4. the correlated and uncorrelated sets;
5. the log-mel store for every run's data, decoded once before runs start side by side;
6. every run, through the sweep runner (resumable, one run per free GPU set);
7. the report over every finished run (`report.write_report`), rewritten when a run finished after it.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..io_utils import atomic_write_json, atomic_write_text
from ..training.results import RESULTS_FILE, has_results
from .sweeps import MODE_PARAMETER, SweepRun, expand_grid, load_sweep, plan_runs, program_for, run_name

logger = logging.getLogger(__name__)

# Figure of the paper → the sweep file (sweeps/<name>.yaml) that draws it, in the paper's order.
FIGURE_SWEEPS = {"2": "alpha", "3a": "strategy", "3b": "hours", "4": "k", "5": "pretrain_vs_joint"}
# The paper's experiments that are not figures, offered by name and never part of "all": the batch composition
# (§2) and the alpha sweep per T (§4.1). The regulariser comparison is not one: its joint runs read the alpha
# sweep's finished baselines (--alpha auto), an order the stages do not keep; run it with run_sweep.py after.
EXTRA_SWEEPS = {"batch": "batch_composition", "alpha_hours": "alpha_hours"}
STUDY_SWEEPS = {**FIGURE_SWEEPS, **EXTRA_SWEEPS}
STUDY_LABELS = {**{figure: f"Fig. {figure}" for figure in FIGURE_SWEEPS}, "batch": "batch composition",
                "alpha_hours": "alpha x T"}
REFERENCE_SWEEP = "alpha"  # its event set is the reference set, its alpha = 1 run of the first seed the tagger
TAGGER_ALPHA = 1.0
RANKED_STRATEGIES = ("correlated", "uncorrelated")
EVENT_SET_NAME = re.compile(r"^k=(?P<k>\d+)_hours=(?P<hours>\d+(?:\.\d+)?)_strategy_(?P<strategy>[a-z_]+)$")
# A GPU throughput for a plan made before any run has finished: the H100 profile of one paper-shape step
# (/work/shared/perf/h100-step-profile.txt: 64 + 128 clips of 128 x 1001 log-mels, bf16, data already on the
# GPU) took 61.7 ms of wall time. Loading and evaluation are not in it, so it is a lower bound on the time.
PROFILE_SAMPLES_PER_SECOND = round((64 + 128) / 0.0617)
PROFILE_SOURCE = (f"{PROFILE_SAMPLES_PER_SECOND:,} samples/s per GPU from the H100 profile of one paper-shape step "
                  "(61.7 ms for 64 + 128 clips, data on the GPU; no run finished yet; --samples_per_second to set it)")
SUBSETS_DIR, RUNS_DIR, RANKING_FILE, WANDB_DIR = "aet_subsets", "runs", "ranking.json", "wandb_sweeps"


@dataclass(frozen=True)
class EventSet:
    """One AudioSet event set of the study, named as the sweep files and the report read it."""

    k: int
    hours: float
    strategy: str

    @property
    def name(self) -> str:
        return f"k={self.k}_hours={self.hours:g}_strategy_{self.strategy}"

    @property
    def ranked(self) -> bool:
        return self.strategy in RANKED_STRATEGIES


def event_set(name: str, where: str = "") -> EventSet:
    """The event set a folder name (`k=35_hours=90_strategy_random`, any parent path) stands for."""
    found = EVENT_SET_NAME.match(Path(str(name).rstrip("/")).name)
    if found is None:
        raise ValueError(f"{where}aet_dataset {name!r} is not an event set name of the form k=<k>_hours=<T>_strategy_<strategy>")
    from ..data.subsets import STRATEGIES

    if found["strategy"] not in STRATEGIES:
        raise ValueError(f"{where}aet_dataset {name!r}: strategy {found['strategy']!r} is not one of {', '.join(STRATEGIES)}")
    return EventSet(int(found["k"]), float(found["hours"]), found["strategy"])


def parse_figures(text: str) -> list[str]:
    """`--figures`: "all" (the five figures) or a comma list of 2, 3a, 3b, 4, 5, batch, alpha_hours (with "all" too)
    → the chosen ones in the paper's order, the extra experiments after the figures."""
    parts = [part.strip().lower() for part in str(text).split(",") if part.strip()]
    choices = f"give 'all' or some of {', '.join(STUDY_SWEEPS)}"
    if not parts:
        raise ValueError(f"--figures {text!r}: {choices}")
    unknown = [part for part in parts if part not in STUDY_SWEEPS and part != "all"]
    if unknown:
        raise ValueError(f"--figures {text!r}: {', '.join(map(repr, unknown))} is not a figure of the paper nor one of its other experiments ({choices})")
    return [figure for figure in STUDY_SWEEPS if figure in parts or ("all" in parts and figure in FIGURE_SWEEPS)]


# --- the sources ----------------------------------------------------------------------------------------


def _looks_like_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text)) and not text.startswith((".", "/"))


def scene_source(text: str) -> str:
    """`--asc_dataset`: a TUT 2018 development folder (made absolute: runs start in the project folder) or a Hub id."""
    path = Path(text).expanduser()
    if path.is_dir():
        missing = [name for name in ("meta.csv", "evaluation_setup") if not (path / name).exists()]
        if missing and not (path / "dataset_dict.json").exists():
            raise ValueError(f"--asc_dataset {text}: not a TUT 2018 development folder (no {' and no '.join(missing)}; "
                             "expected meta.csv, evaluation_setup/ and audio/)")
        return str(path.resolve())
    if path.exists():
        raise ValueError(f"--asc_dataset {text}: not a folder (a TUT 2018 development folder or a Hub id)")
    if not _looks_like_hub_id(text):
        raise ValueError(f"--asc_dataset {text}: no such folder (a TUT 2018 development folder or a Hub id like "
                         "owner/TUT-urban-acoustic-scenes-2018-development)")
    return text


def event_source(text: str, config: str) -> str:
    """`--audioset`: a folder with the official segment CSVs + audio/ (or saved/parquet files) or a Hub id."""
    from ..data.audioset import CONFIG_TRAIN_PARTS, SEGMENT_FILES

    if config not in CONFIG_TRAIN_PARTS:
        raise ValueError(f"--audioset_config {config!r}: expected one of {', '.join(CONFIG_TRAIN_PARTS)}")
    path = Path(text).expanduser()
    if path.is_dir():
        if any((path / name).exists() for name in SEGMENT_FILES.values()):
            needed = [SEGMENT_FILES[part] for part in CONFIG_TRAIN_PARTS[config]] + [SEGMENT_FILES["eval"], "audio"]
            missing = [name for name in needed if not (path / name).exists()]
            if missing:
                raise ValueError(f"--audioset {text}: a segment-CSV folder without {', '.join(missing)} "
                                 f"(--audioset_config {config} reads {', '.join(needed)})")
        elif not ((path / "dataset_dict.json").is_file() or any(path.glob("*.parquet")) or any(path.glob("*/*.parquet"))
                  or any(path.glob("**/*.arrow"))):
            raise ValueError(f"--audioset {text}: not an AudioSet folder (expected the segment CSVs with audio/, a "
                             "save_to_disk folder, or parquet files)")
        return str(path.resolve())
    if path.exists() or not _looks_like_hub_id(text):
        raise ValueError(f"--audioset {text}: no such folder (a folder with the segment CSVs and audio/, or a Hub id "
                         "like agkphysics/AudioSet)")
    return text


# --- the plan -------------------------------------------------------------------------------------------


@dataclass
class StudyPlan:
    """What the chosen figures need, with every path in place."""

    figures: list[str]
    root: Path
    grid_points: dict[str, int]  # sweep → runs of its grid, shared ones included (the paper's count)
    sweeps: dict[str, dict]  # sweep → its configuration as this study runs it (shared settings dropped)
    shared: list[tuple[str, str, str]]  # (sweep, run, the sweep/run that trains it)
    runs: list[SweepRun]  # every training, the tagger first
    tagger: SweepRun | None  # the event-only run whose ranking the correlated / uncorrelated sets need
    event_sets: list[EventSet]  # those without a ranking first
    asc_dataset: str = ""
    report_dir: Path | None = None

    @property
    def subsets_dir(self) -> Path:
        return self.root / SUBSETS_DIR

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    @property
    def ranking(self) -> Path:
        return self.root / RANKING_FILE

    def subset_dir(self, subset: EventSet) -> Path:
        return self.subsets_dir / subset.name

    def built(self, subset: EventSet) -> bool:
        return (self.subset_dir(subset) / "subset_info.json").is_file()


def load_study_sweeps(sweeps_dir: str | Path, figures: list[str]) -> dict[str, dict]:
    """The sweep file of each figure, plus the reference sweep (the tagger's); raises ValueError naming a missing one."""
    sweeps_dir = Path(sweeps_dir)
    if not sweeps_dir.is_dir():
        raise ValueError(f"--sweeps_dir {sweeps_dir}: no such folder")
    names = [STUDY_SWEEPS[figure] for figure in figures]
    configs = {}
    for name in dict.fromkeys([*names, REFERENCE_SWEEP]):
        path = sweeps_dir / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"--sweeps_dir {sweeps_dir}: no {path.name}"
                             + (" (the reference sweep: its event set trains the tagger)" if name not in names else ""))
        configs[name] = load_sweep(path)
    return configs


def study_config(config: dict, name: str, asc_dataset: str, subsets_dir: Path, seeds: list[int] | None,
                 report_to: str) -> dict:
    """A sweep file's configuration with this study's data: `asc_dataset`, each event set under `subsets_dir`,
    the seeds (when given) and `report_to`."""
    config = copy.deepcopy(config)
    parameters = config.setdefault("parameters", {})
    parameters["asc_dataset"] = {"value": asc_dataset}
    events = parameters.get("aet_dataset")
    if events is None:
        raise ValueError(f"sweep {name}: no aet_dataset parameter (every figure trains on an event set)")
    where = f"sweep {name}: "
    if "values" in events:
        events["values"] = [str(subsets_dir / event_set(value, where).name) for value in events["values"]]
    else:
        events["value"] = str(subsets_dir / event_set(events["value"], where).name)
    if seeds is not None:
        parameters["seed"] = {"values": list(seeds)}
    parameters["report_to"] = {"value": report_to}
    return config


def _identity(config: dict, parameters: dict) -> str:
    """What a grid point trains: its program and its flags (a `mode` picks the program and is not passed on)."""
    passed = {key: value for key, value in parameters.items() if key not in ("output_dir", MODE_PARAMETER)}
    return json.dumps([program_for(config, parameters), passed], sort_keys=True, default=str)


def share_grid_points(configs: dict[str, dict]) -> tuple[dict[str, dict], list[tuple[str, str, str]]]:
    """Each setting trained once: a value of a swept parameter (not the seed) whose every grid point an earlier
    sweep already trains is dropped from the later sweep. Returns the sweeps (one whose grid is all shared is
    left out) and (sweep, run, the sweep/run that trains it) for each point dropped."""
    seen: dict[str, str] = {}
    kept, shared = {}, []
    for name, config in configs.items():
        points = [(swept, _identity(config, parameters)) for swept, parameters in expand_grid(config)]
        reduced = copy.deepcopy(config)
        for parameter, spec in reduced["parameters"].items():
            if parameter != "seed" and "values" in spec:
                spec["values"] = [value for value in spec["values"]
                                  if not all(identity in seen for swept, identity in points if swept[parameter] == value)]
        swept_values = {parameter: spec["values"] for parameter, spec in reduced["parameters"].items() if "values" in spec}
        remaining = [(swept, identity) for swept, identity in points
                     if all(swept[parameter] in values for parameter, values in swept_values.items())]
        kept_names = {run_name(swept) for swept, _ in remaining}
        shared += [(name, run_name(swept), seen[identity]) for swept, identity in points if run_name(swept) not in kept_names]
        for swept, identity in remaining:
            seen.setdefault(identity, f"{name}/{run_name(swept)}")
        if remaining:
            kept[name] = reduced
    return kept, shared


def plan_study(sweeps_dir: str | Path, figures: list[str], asc_dataset: str, root: str | Path, *, seeds: list[int] | None = None,
               launcher: str = "accelerate", extra_args: list[str] | None = None, processes_per_run: int | None = None,
               report_to: str = "none", report_dir: str | Path | None = None) -> StudyPlan:
    """The study of `figures`: its sweeps with this study's data, the trainings (shared settings once, the tagger
    first) and the event sets. Raises ValueError naming a bad sweep file, event set name or figure."""
    root = Path(root).resolve()
    subsets_dir = root / SUBSETS_DIR
    loaded = load_study_sweeps(sweeps_dir, figures)
    configs = {name: study_config(config, name, asc_dataset, subsets_dir, seeds, report_to) for name, config in loaded.items()}
    chosen = {STUDY_SWEEPS[figure]: configs[STUDY_SWEEPS[figure]] for figure in figures}
    grid_points = {name: len(expand_grid(config)) for name, config in chosen.items()}
    sweeps, shared = share_grid_points(chosen)
    runs = [run for name, config in sweeps.items()
            for run in plan_runs(config, name, root / RUNS_DIR, launcher, extra_args, processes_per_run)]
    subsets = {event_set(value) for config in sweeps.values() for value in _values(config, "aet_dataset")}
    tagger = None
    if any(subset.ranked for subset in subsets):
        tagger = tagger_run(configs[REFERENCE_SWEEP], root / RUNS_DIR, launcher, extra_args, processes_per_run)
        subsets.add(event_set(tagger.parameters["aet_dataset"]))
        runs = [tagger] + [run for run in runs if run.output_dir != tagger.output_dir]
    order = sorted(subsets, key=lambda s: (s.ranked, s.strategy != "random", s.k, s.hours, s.strategy))
    return StudyPlan(figures, root, grid_points, sweeps, shared, runs, tagger, order, asc_dataset,
                     Path(report_dir).resolve() if report_dir else root / "report")


def _values(config: dict, parameter: str) -> list:
    spec = config["parameters"].get(parameter, {})
    return list(spec["values"]) if "values" in spec else [spec["value"]] if "value" in spec else []


def tagger_run(reference: dict, runs_dir: Path, launcher: str, extra_args: list[str] | None,
               processes_per_run: int | None) -> SweepRun:
    """The reference sweep's alpha = 1 run of its first seed: the event-only tagger, in the folder Figure 2's grid
    gives it (so the alpha sweep finds it finished)."""
    if TAGGER_ALPHA not in [float(value) for value in _values(reference, "alpha")]:
        raise ValueError(f"the {REFERENCE_SWEEP} sweep has no alpha = {TAGGER_ALPHA:g} run to rank the event classes with")
    if len(_values(reference, "aet_dataset")) != 1:
        raise ValueError(f"the {REFERENCE_SWEEP} sweep must train on one event set (the reference set)")
    seed = _values(reference, "seed")[0]
    runs = plan_runs(reference, REFERENCE_SWEEP, runs_dir, launcher, extra_args, processes_per_run)
    return next(run for run in runs if float(run.parameters["alpha"]) == TAGGER_ALPHA and run.parameters["seed"] == seed)


def plan_lines(plan: StudyPlan) -> list[str]:
    """The study in words: figures, runs (the paper's count and the trainings), event sets, tagger and ranking."""
    labels = {sweep: STUDY_LABELS[figure] for figure, sweep in STUDY_SWEEPS.items()}
    total = sum(plan.grid_points.values())
    lines = [f"study: Figures {', '.join(plan.figures)}: {total} runs ("
             + " + ".join(f"{count} {labels[name]}" for name, count in plan.grid_points.items()) + ")"]
    if plan.shared:
        lines.append(f"  {len(plan.shared)} of them are a setting of an earlier figure, trained once and drawn in both: "
                     + _shared_text(plan.shared))
    extra = " (the tagger, a run of Figure 2's grid, included)" if plan.tagger and REFERENCE_SWEEP not in plan.grid_points else ""
    lines.append(f"trainings: {len(plan.runs)}{extra}")
    lines.append(f"event sets: {len(plan.event_sets)} in {plan.subsets_dir}")
    for subset in plan.event_sets:
        state = "built" if plan.built(subset) else "to build" + (" after the ranking" if subset.ranked else "")
        lines.append(f"  {subset.name}: {state}")
    if plan.tagger is not None:
        lines.append(f"tagger (event only, alpha = 1): {plan.tagger.output_dir} "
                     f"({'finished' if has_results(plan.tagger.output_dir) else 'to train first'})")
        lines.append(f"ranking: {plan.ranking} ({'written' if plan.ranking.is_file() else 'to write from the tagger'})")
    lines.append(f"report: {plan.report_dir}")
    return lines


def _shared_text(shared: list[tuple[str, str, str]]) -> str:
    by_sweep: dict[str, int] = {}
    for sweep, _, _ in shared:
        by_sweep[sweep] = by_sweep.get(sweep, 0) + 1
    return ", ".join(f"{count} of {sweep}" for sweep, count in by_sweep.items())


def plan_estimate(plan: StudyPlan, gpus: list[int], gpus_per_run: int = 1, parallel: int | None = None,
                  samples_per_second: float | None = None):
    """`sweep_plan.plan_sweep` over every training in the order `reproduce` runs them: the tagger first and alone,
    then the store's build (stage 5), then the others. With no throughput given and no run finished, the H100
    profile's (said so in the plan)."""
    from .sweep_plan import finished_runs, plan_sweep

    profile = samples_per_second is None and not finished_runs(plan.runs)
    estimate = plan_sweep(plan.runs, gpus, gpus_per_run, parallel, PROFILE_SAMPLES_PER_SECOND if profile else samples_per_second,
                          first_alone=plan.tagger is not None, store_first=True)  # as `reproduce` orders the stages
    if profile:
        estimate.throughput_source = PROFILE_SOURCE
    return estimate


# --- W&B ------------------------------------------------------------------------------------------------


def wandb_configs(plan: StudyPlan, project: str) -> dict[str, dict]:
    """The W&B sweeps of the study: its configurations, each run's folder under this study's runs folder."""
    configs = {}
    for name, config in plan.sweeps.items():
        config = copy.deepcopy(config)
        config["project"] = project
        if "parameters" in config and "report_to" in config["parameters"]:
            config["parameters"]["report_to"] = {"value": "wandb"}
        config["command"] = [part.replace("outputs/sweeps/", f"{plan.runs_dir}/") if isinstance(part, str) else part
                             for part in config.get("command", [])]
        configs[name] = config
    return configs


def create_wandb_sweeps(plan: StudyPlan, project: str, entity: str | None) -> dict[str, str]:
    """Create each W&B sweep once (their ids kept in ROOT/wandb_sweeps/sweeps.json, so a rerun creates none again);
    returns sweep → `entity/project/id`. Each configuration is also written beside it as <sweep>.yaml."""
    folder = plan.root / WANDB_DIR
    record = folder / "sweeps.json"
    created = json.loads(record.read_text()) if record.is_file() else {}
    for name, config in wandb_configs(plan, project).items():
        atomic_write_text(folder / f"{name}.yaml", yaml.safe_dump(config, sort_keys=False))
        if name in created:
            continue
        import wandb

        sweep_id = wandb.sweep(config, project=project, entity=entity)
        created[name] = f"{entity + '/' if entity else ''}{project}/{sweep_id}"
        atomic_write_json(record, created)  # after each: a failure later keeps the ones made
    return created


# --- the stages -----------------------------------------------------------------------------------------


def build_event_sets(plan: StudyPlan, audioset: str, audioset_config: str, ranked: bool) -> list[EventSet]:
    """Build the study's event sets without (`ranked` False) or with a ranking; those built are kept. AudioSet
    is read once for all of them. Returns the sets built now."""
    from ..data.audioset import load_audioset
    from ..data.subsets import build_aet_subset, save_aet_subset

    todo = [subset for subset in plan.event_sets if subset.ranked is ranked and not plan.built(subset)]
    if not todo:
        return []
    source, report = load_audioset(audioset, config=audioset_config, return_info=True)
    for number, subset in enumerate(todo, 1):
        logger.info("event set %d/%d: %s", number, len(todo), subset.name)
        data, info = build_aet_subset(source, k=subset.k, hours=subset.hours, strategy=subset.strategy, seed=0,
                                      ranking=str(plan.ranking) if subset.ranked else None, return_info=True)
        info.source, info.missing_audio = f"{report.source} ({audioset_config})", dict(report.missing_audio)
        save_aet_subset(data, plan.subset_dir(subset), info, overwrite=True)  # a folder without subset_info.json is a leftover
    return todo


def write_study_ranking(plan: StudyPlan, device: str, batch_size: int = 16) -> bool:
    """Rank the tagger's event classes on the scene training clips (kept when written). Returns whether it wrote."""
    from ..data.ranking import load_tagger, rank_dataset, write_ranking
    from ..data.sources import load_scene_source

    if plan.ranking.is_file():
        return False
    if plan.tagger is None or not has_results(plan.tagger.output_dir):
        raise RuntimeError(f"the tagger {plan.tagger.output_dir if plan.tagger else ''} has not finished: no ranking")
    scenes = load_scene_source(plan.asc_dataset)
    tagger = load_tagger(str(plan.tagger.output_dir), device=device)
    ranking, clips = rank_dataset(tagger, scenes["train"], batch_size=batch_size)
    write_ranking(plan.ranking, ranking, tagger=str(plan.tagger.output_dir), asc_dataset=plan.asc_dataset, split="train",
                  clips=clips)
    logger.info("ranking of %d event classes over %d scene clips → %s; top: %s", len(ranking), clips, plan.ranking,
                ", ".join(entry["name"] for entry in ranking[:5]))
    return True


def prepare_features(runs: list[SweepRun]) -> int:
    """The log-mel store of every unfinished run's data, decoded here once, before runs start side by side and
    wait on the store's lock in turn. Returns the data settings prepared."""
    from ..training.preparation import make_feature_extractor, prepare_data
    from .sweep_plan import run_settings

    done = set()
    for run in runs:
        settings = None if has_results(run.output_dir) else run_settings(run)
        if settings is None:
            continue
        _, data, train, _ = settings
        need_events = train.alpha == "auto" or float(train.alpha) > 0 or run.program.endswith("pretrain_finetune.py")
        key = json.dumps([repr(data), need_events])
        if key not in done:
            done.add(key)
            prepare_data(data, make_feature_extractor(data), need_events=need_events)
    return len(done)


def write_study_report(plan: StudyPlan) -> dict | None:
    """The report over every finished run, unless the one there is newer than all of them. Returns its summary,
    or None when it was kept."""
    from .report import write_report
    from .run_readings import load_runs

    results = list(plan.runs_dir.rglob(RESULTS_FILE)) if plan.runs_dir.is_dir() else []
    if not results:
        raise RuntimeError(f"no finished run in {plan.runs_dir}: nothing to report")
    summary_file = plan.report_dir / "summary.json"
    if summary_file.is_file() and summary_file.stat().st_mtime > max(path.stat().st_mtime for path in results):
        return None
    return write_report(load_runs(plan.runs_dir), plan.report_dir)


@dataclass
class StudyOutcome:
    built: list[str] = field(default_factory=list)  # event sets built now
    ranked: bool = False  # the ranking written now
    trained: list[str] = field(default_factory=list)  # runs that ran now (finished or failed)
    failed: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None  # the new report's summary; None when the one there was kept
    stopped_by: str | None = None
    agents: dict[str, str] = field(default_factory=dict)  # W&B sweep → entity/project/id, for `wandb agent`
    sweep: Any = None  # the runner's outcomes (SweepOutcome) added up: the runs, their wall time, against the plan


def reproduce(plan: StudyPlan, audioset: str, audioset_config: str = "unbalanced", *, gpus: list[int] = (),
              gpus_per_run: int = 1, parallel: int | None = None, cwd: str | Path | None = None, ranking_device: str = "cpu",
              wandb_project: str | None = None, wandb_entity: str | None = None) -> StudyOutcome:
    """Every stage of the study in turn, each skipping what is already there. With `wandb_project`, the sweeps
    are created on W&B (the tagger still trains here) and the report is written only from the runs already here."""
    from .sweep_runner import SweepOutcome, run_sweep

    outcome = StudyOutcome()

    def train(runs: list[SweepRun]) -> bool:
        result = run_sweep(runs, parallel=parallel, cwd=cwd, gpus=gpus, gpus_per_run=gpus_per_run)
        total = outcome.sweep = outcome.sweep or SweepOutcome()  # the tagger's sweep and the others', one after the other
        total.done += result.done
        total.failed += result.failed
        if result.wall_seconds is not None:
            total.wall_seconds = (total.wall_seconds or 0.0) + result.wall_seconds
        outcome.trained += [str(run.output_dir) for run in result.done] + [str(run.output_dir) for run, _ in result.failed]
        outcome.failed += [f"{run.output_dir}: {reason}" for run, reason in result.failed]
        outcome.stopped_by = result.stopped_by
        return not (result.failed or result.stopped_by)

    stage = _stages(1 + 3 * (plan.tagger is not None) + (1 if wandb_project else 3))
    stage("event sets without a ranking")
    outcome.built += [subset.name for subset in build_event_sets(plan, audioset, audioset_config, ranked=False)]
    if plan.tagger is not None:
        stage(f"the tagger {plan.tagger.output_dir}")
        if not train([plan.tagger]):
            return outcome
        stage(f"the ranking {plan.ranking}")
        outcome.ranked = write_study_ranking(plan, ranking_device)
        stage("the correlated and uncorrelated event sets")
        outcome.built += [subset.name for subset in build_event_sets(plan, audioset, audioset_config, ranked=True)]
    if wandb_project is not None:
        stage("the W&B sweeps")
        outcome.agents = create_wandb_sweeps(plan, wandb_project, wandb_entity)
        if any(has_results(run.output_dir) for run in plan.runs if run is not plan.tagger):  # the agents' runs are here
            outcome.report = write_study_report(plan)
        return outcome
    stage("the log-mel store")
    prepare_features(plan.runs)
    stage(f"{len(plan.runs)} trainings in {plan.runs_dir}")
    if not train(plan.runs):
        return outcome
    stage(f"the report in {plan.report_dir}")
    outcome.report = write_study_report(plan)
    return outcome


def _stages(total: int):
    count = iter(range(1, total + 1))

    def announce(what: str) -> None:
        logger.info("[%d/%d] %s", next(count, total), total, what)

    return announce
