"""The plan of a sweep before it runs: every run with its GPU, the data it needs and whether that is built, and
an estimate of GPU-hours, wall time and disk; after the sweep, the estimate against what was measured.

Each figure says where it came from:
- steps: `--max_train_steps`; else the scene training clips // (asc_batch_size x processes) x epochs (an epoch is
  one pass over the scene training set), the clips counted in the data as a run loads it (undecoded), or, for a
  data set not on this machine, from its documented size (TUT 2018); else the median of the sweep's finished runs.
- samples: steps x processes x (asc_batch_size if alpha < 1, + aet_batch_size if alpha > 0), as results.json
  counts them; pre-train + fine-tune runs count events in stage 1 and scenes in stage 2.
- time of a run: samples / (throughput x its processes) + a per-run overhead + decoding the clips it is the first
  to add to the store (`DECODE_AUDIO_SECONDS_PER_SECOND`). The throughput (per process) is `--samples_per_second`,
  else the median `train_steady_samples_per_second` (per process) of the sweep folders' finished runs. The overhead
  is the median, over those runs, of their wall time less their steady training time (start-up, data loading,
  evaluation, the first step, checkpoints); the wall time as the runner measured it (`sweep_run.json`), else
  results.json's. With no finished run it is not counted, and the plan says so.
- wall time: the runs scheduled in order onto the GPU sets (or `--parallel` slots), each on the first set free.
- disk: each run folder (the median size of the finished ones, else parameters x 4 bytes x (1 + save_total_limit
  x 3: model, optimizer moments)) plus the log-mel store's additions (clips not stored x mel bins x frames x 2 bytes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import io
import json
import re
import shlex
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..training.results import ResultsError, has_results, read_results
from .sweep_runner import GpuPool
from .sweeps import RUN_RECORD_FILE, SweepRun, cuda_visible_devices, is_finished

TRAINING_PROGRAMS = {"train_joint.py", "pretrain_finetune.py"}  # programs whose flags the plan reads
# Clips of data sets whose split sizes are documented, for a plan made where they are not (yet): (train, test).
DOCUMENTED_SCENE_SETS = {"TUT-urban-acoustic-scenes-2018-development": (6122, 2518)}  # fold 1 of the development set
AUDIOSET_CLIPS_PER_HOUR = 360  # 10 s clips
DECODE_AUDIO_SECONDS_PER_SECOND = 494.0  # benchmarks/bench_feature_cache.py: 49.4 clips/s of 10 s audio, one process
STORE_BYTES_PER_VALUE = 2  # the log-mel store holds fp16
# A larger split is looked up in the store on an evenly spaced sample: a clip's key hashes its embedded audio, and
# reading 90 h of it is a run's start-up, not a plan's.
SAMPLE_CLIPS = 2000


@dataclass
class DataCheck:
    """One data setting of a sweep: what it needs, whether it is here, what the store lacks."""

    lines: list[str]  # per source and store, for the plan
    scene_train_rows: int | None
    rows_source: str
    event_classes: int
    store: str
    missing_keys: set = field(default_factory=set)  # clips not in the store (data here)
    estimated_clips: dict = field(default_factory=dict)  # "source split" → clips to store (data not here, or sampled)
    clip_bytes: int = 0
    clip_seconds: float = 0.0
    here: bool = True  # every source on this machine
    ready: bool = True  # and every clip stored


@dataclass
class RunEstimate:
    run: SweepRun
    finished: bool
    steps: int | None = None
    steps_source: str = ""
    samples: int | None = None
    seconds: float | None = None
    build_seconds: float = 0.0  # decoding clips into the store, paid by this run
    store_clips: int = 0
    store_bytes: int = 0
    run_bytes: int | None = None
    gpus: tuple[int, ...] | None = None  # the estimate's placement; the runner gives each run the first free set
    data: DataCheck | None = None


@dataclass
class SweepPlan:
    runs: list[RunEstimate]
    gpus: list[int]
    gpus_per_run: int
    slots: int
    throughput: float | None  # samples/s per process
    throughput_source: str
    overhead: float | None
    overhead_source: str
    run_bytes: int | None  # measured on finished runs
    disk_source: str
    wall_seconds: float | None = None
    gpu_hours: float | None = None
    decode_seconds: float | None = None  # with `store_first`: the store built before the runs, in one process

    @property
    def pending(self) -> list[RunEstimate]:
        return [estimate for estimate in self.runs if not estimate.finished]


def samples_per_step(alpha: float | None, asc_batch_size: int, aet_batch_size: int, processes: int = 1) -> int:
    """Clips of one step, as results.json counts them (alpha None: both tasks, as `--alpha auto`)."""
    return processes * ((asc_batch_size if alpha is None or alpha < 1 else 0) + (aet_batch_size if alpha is None or alpha > 0 else 0))


# --- finished runs ------------------------------------------------------------------------------------


@dataclass
class Finished:
    steps: int
    samples: int
    throughput: float | None  # steady samples/s per process
    wall: float | None
    wall_source: str
    bytes: int  # of its folder


def finished_runs(runs: list[SweepRun]) -> list[Finished]:
    """Every finished run in the sweeps' folders (those of this grid and any other there)."""
    found = []
    for folder in sorted({run.output_dir.parent for run in runs}):
        for run_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
            if has_results(run_dir):
                with contextlib.suppress(ResultsError, KeyError, TypeError, ValueError):
                    found.append(_finished(run_dir))
    return [run for run in found if run.steps]


def _finished(run_dir: Path) -> Finished:
    results = read_results(run_dir, require_validation_selection=False)
    config, processes = results.config, int(results.environment.get("num_processes") or 1)
    asc, aet, steps = int(config["asc_batch_size"]), int(config["aet_batch_size"]), int(results.steps or 0)
    if results.pretrain:  # stage 1 events only, stage 2 scenes only
        stage_one = int(results.pretrain.get("steps") or 0)
        samples = processes * (stage_one * aet + (steps - stage_one) * asc)
    else:
        samples = steps * samples_per_step(results.alpha, asc, aet, processes)
    wall, source = results.wall_time_seconds, "results.json's wall time (start-up not included)"
    if (record := run_dir / RUN_RECORD_FILE).is_file():
        wall, source = json.loads(record.read_text())["wall_seconds"], "wall time as the runner measured it"
    steady = results.train_steady_samples_per_second
    return Finished(steps, samples, steady / processes if steady else None, wall, source,
                    sum(path.stat().st_size for path in run_dir.rglob("*") if path.is_file()))


# --- what a run's flags say ---------------------------------------------------------------------------


def run_settings(run: SweepRun):
    """(model, data, training, stages) arguments of a run, defaults resolved; None for a program the plan does not know."""
    if Path(run.program).name not in TRAINING_PROGRAMS:
        return None
    from ..training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args, resolve_defaults
    from ..training.pretraining import PretrainArguments

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse prints its usage before exiting
            model, data, train, stages = parse_args((ModelArguments, DataArguments, JointTrainingArguments, PretrainArguments),
                                                    run.arguments)
    except (ValueError, SystemExit):
        return None
    return model, data, resolve_defaults(data, train), stages if Path(run.program).name == "pretrain_finetune.py" else None


# --- data ---------------------------------------------------------------------------------------------


def _absent(source: str) -> str | None:
    """Why a source cannot be read here without a download, or None."""
    if source == "synthetic" or Path(source).is_dir():
        return None
    return "not a folder" if Path(source).exists() else "not here (a folder not built yet, or a Hub id: not fetched for a plan)"


def check_data(data_args, need_events: bool, store_indexes: dict) -> DataCheck:
    """Load the run's splits as a run does (undecoded) and look their clips up in the log-mel store; for data not on
    this machine, count what the documented sizes and the event folder's name say."""
    from ..data.feature_store import FeatureStore, default_store_root
    from ..training.preparation import load_splits, make_feature_extractor

    extractor = make_feature_extractor(data_args)
    store = FeatureStore(data_args.feature_store_dir or default_store_root(), extractor)
    sources = {"scene": data_args.asc_dataset, **({"event": data_args.aet_dataset} if need_events else {})}
    absent = {task: why for task, source in sources.items() if (why := _absent(source))}
    check = DataCheck([f"{task} data {source}: {absent.get(task, 'here')}" for task, source in sources.items()], None, "", 0,
                      str(store.folder), clip_bytes=extractor.num_mel_bins * extractor.num_frames * STORE_BYTES_PER_VALUE,
                      clip_seconds=float(data_args.resolved_features()["clip_seconds"]), here=not absent, ready=not absent)
    if "scene" in absent:  # the scene set defines the steps: no loading without it
        _documented_scenes(check, data_args, sources["scene"])
    else:
        splits, _, event_labels = load_splits(data_args, need_events and "event" not in absent)
        check.scene_train_rows, check.rows_source = len(splits["scene_train"]), "the data, loaded undecoded"
        check.event_classes = len(event_labels)
        _look_up(check, store, splits, sources, store_indexes)
    if "event" in absent:
        _documented_events(check, data_args, sources["event"])
    if absent:
        check.lines.append(f"log-mel store {check.store}: data not here counted from documented sizes and the event "
                           "folders' hours (their evaluation splits not counted)")
    return check


def _look_up(check: DataCheck, store, splits: dict, sources: dict, store_indexes: dict) -> None:
    import numpy as np

    from ..data.feature_store import StoreIndex, audio_entries, clip_key

    if store.folder not in store_indexes:
        store_indexes[store.folder] = StoreIndex.of(store.segments())
    index, missing = store_indexes[store.folder], 0
    for name, split in splits.items():
        sample = split.select(np.linspace(0, len(split) - 1, SAMPLE_CLIPS).astype(int)) if len(split) > SAMPLE_CLIPS else split
        keys = np.array([clip_key(entry) for entry in audio_entries(sample)], dtype="S32")
        absent = keys[index.locate(keys)[:, 0] < 0]
        if sample is split:
            check.missing_keys |= set(absent.tolist())
        elif len(absent):
            check.estimated_clips[f"{sources[name.split('_')[0]]} {name}"] = round(len(absent) / len(keys) * len(split))
        missing += round(len(absent) / len(keys) * len(split))
    check.ready = check.ready and not missing
    clips = sum(len(split) for split in splits.values())
    sampled = f" (splits over {SAMPLE_CLIPS:,} clips looked up on a sample)" if max(map(len, splits.values())) > SAMPLE_CLIPS else ""
    loaded = " + ".join(source for task, source in sources.items() if any(name.startswith(task) for name in splits))
    check.lines.append(f"log-mel store {store.folder}: {clips - missing:,} of {clips:,} clips of {loaded} stored{sampled}")


def _documented_scenes(check: DataCheck, data_args, source: str) -> None:
    """A scene set not here whose size is documented (TUT 2018): its training clips less the validation split."""
    name = Path(source.rstrip("/")).name  # a folder's or a Hub id's last part
    if name in DOCUMENTED_SCENE_SETS:
        train, test = DOCUMENTED_SCENE_SETS[name]
        validation = round(train * data_args.asc_validation_split)
        rows, limit = train - validation, data_args.max_eval_samples
        rows = min(rows, data_args.max_asc_train_samples or rows)
        check.scene_train_rows, check.rows_source = rows, f"{name}'s documented size ({train:,} training clips less the validation split)"
        check.estimated_clips[source] = rows + min(validation, limit or validation) + min(test, limit or test)


def _documented_events(check: DataCheck, data_args, source: str) -> None:
    """An AudioSet subset not built yet: k classes and T hours from its folder name (k=35_hours=90_...), 10 s clips."""
    classes, hours = re.search(r"k=(\d+)", source), re.search(r"(?:hours|T)=([\d.]+)", source)
    check.event_classes = int(classes[1]) if classes else 0
    if hours:
        clips = round(float(hours[1]) * AUDIOSET_CLIPS_PER_HOUR)
        check.estimated_clips[source] = min(clips, data_args.max_aet_train_samples or clips)


def model_bytes(encoder: str, num_mel_bins: int, event_classes: int, save_total_limit: int | None) -> int:
    """A run folder from the model: parameters x 4 bytes x (1 + kept checkpoints x 3: model + AdamW's two moments)."""
    import torch

    from ..models.configuration_sceneevent import SceneEventConfig
    from ..models.modeling_sceneevent import SceneEventModel

    scenes, events = [f"s{i}" for i in range(10)], [f"e{i}" for i in range(max(event_classes, 2))]  # TUT 2018: 10 scenes
    with torch.device("meta"):  # shapes only: nothing allocated
        model = SceneEventModel(SceneEventConfig(scene_labels=scenes, event_labels=events, encoder=encoder, num_mel_bins=num_mel_bins))
    return sum(parameter.numel() for parameter in model.parameters()) * 4 * (1 + (save_total_limit or 0) * 3)


# --- the plan -----------------------------------------------------------------------------------------


def plan_sweep(runs: list[SweepRun], gpus: list[int] = (), gpus_per_run: int = 1, parallel: int | None = None,
               samples_per_second: float | None = None, first_alone: bool = False, store_first: bool = False) -> SweepPlan:
    """Every run's estimate and GPUs, and the totals. Raises ValueError when `gpus` cannot hold one run.

    For reproduce_paper's order: `first_alone`, the first pending run finishes before the others start (the tagger,
    whose ranking the others' data needs); `store_first`, the others' clips are decoded into the store before they
    start, in one process (`decode_seconds`, in the wall time and not in the GPU-hours), instead of by each run."""
    gpus = list(gpus)
    slots = GpuPool(gpus, gpus_per_run).slots if gpus else parallel or 1
    done = finished_runs(runs)
    plan = SweepPlan([RunEstimate(run, is_finished(run)) for run in runs], gpus, gpus_per_run, min(parallel or slots, slots),
                     *_rates(done, samples_per_second))
    checks, indexes, stored, model_sizes = {}, {}, set(), {}
    for estimate in plan.pending:
        settings = run_settings(estimate.run)
        if settings is not None:
            model, data, train, stages = settings
            alpha = None if train.alpha == "auto" else float(train.alpha)  # auto: both tasks
            key = json.dumps([dataclasses.asdict(data), alpha != 0], sort_keys=True, default=str)
            if key not in checks:
                checks[key] = check_data(data, alpha != 0, indexes)
            estimate.data = check = checks[key]
            _steps(estimate, train, stages, alpha, estimate.run.processes, check)
            limit = train.save_total_limit if train.checkpointing_steps else 0
            size = (model.encoder, data.resolved_features()["num_mel_bins"], check.event_classes, limit)
            if plan.run_bytes is None and size not in model_sizes:
                model_sizes[size] = model_bytes(*size)
                plan.disk_source = f"from the model: parameters x 4 bytes x (1 + {limit or 0} kept checkpoint(s) x 3)"
            estimate.run_bytes = model_sizes.get(size)
            _store_share(estimate, check, stored)
        if estimate.steps is None and done:
            estimate.steps = round(statistics.median(run.steps for run in done))
            estimate.steps_source = f"the median of {len(done)} finished runs"
            estimate.samples = round(statistics.median(run.samples / run.steps for run in done) * estimate.steps)
        if estimate.samples is not None and plan.throughput:
            training = estimate.samples / (plan.throughput * estimate.run.processes)
            estimate.seconds = training + (plan.overhead or 0.0) + estimate.build_seconds
        estimate.run_bytes = plan.run_bytes if plan.run_bytes is not None else estimate.run_bytes
    if store_first:
        later = plan.pending[1:] if first_alone else plan.pending
        plan.decode_seconds = sum(estimate.build_seconds for estimate in later)
        for estimate in later:
            estimate.seconds = None if estimate.seconds is None else estimate.seconds - estimate.build_seconds
            estimate.build_seconds = 0.0
    _schedule(plan, first_alone)
    return plan


def _store_share(estimate: RunEstimate, check: DataCheck, stored: set) -> None:
    """The clips this run adds to the store (and decodes first): those of its data no earlier run of the plan added."""
    new = (check.missing_keys | set(check.estimated_clips)) - stored
    stored |= new
    estimate.store_clips = sum(check.estimated_clips.get(key, 1) for key in new)  # a key, or a source's estimated count
    estimate.store_bytes = estimate.store_clips * check.clip_bytes
    estimate.build_seconds = estimate.store_clips * check.clip_seconds / DECODE_AUDIO_SECONDS_PER_SECOND


def _rates(done: list[Finished], samples_per_second: float | None) -> tuple:
    steady = [run.throughput for run in done if run.throughput]
    if samples_per_second:
        throughput, source = samples_per_second, "--samples_per_second"
    elif steady:
        throughput = statistics.median(steady)
        source = f"median train_steady_samples_per_second of {len(steady)} finished runs in the sweep folder"
    else:
        throughput, source = None, "unknown: no finished run in the sweep folder; pass --samples_per_second"
    timed = [run for run in done if run.throughput and run.wall is not None]
    if timed:
        overhead = statistics.median(max(0.0, run.wall - run.samples / run.throughput) for run in timed)
        overhead_source = f"median over {len(timed)} finished runs of wall time less steady training time ({timed[0].wall_source})"
    else:
        overhead, overhead_source = None, "not counted: no finished run to measure start-up, data loading and evaluation from"
    sizes = [run.bytes for run in done]
    run_bytes = statistics.median(sizes) if sizes else None
    return throughput, source, overhead, overhead_source, run_bytes, f"median of {len(sizes)} finished run folders" if sizes else ""


def _steps(estimate: RunEstimate, train, stages, alpha: float | None, processes: int, check: DataCheck) -> None:
    per_epoch = check.scene_train_rows // (train.asc_batch_size * processes) if check.scene_train_rows is not None else None
    if stages is not None and per_epoch is not None:  # --max_train_steps does not apply to the stages
        one, two = per_epoch * stages.pretrain_epochs, per_epoch * stages.finetune_epochs
        estimate.steps, estimate.samples = one + two, processes * (one * train.aet_batch_size + two * train.asc_batch_size)
    elif stages is None and (train.max_train_steps or per_epoch is not None):
        estimate.steps = train.max_train_steps or per_epoch * train.num_train_epochs
        estimate.samples = estimate.steps * samples_per_step(alpha, train.asc_batch_size, train.aet_batch_size, processes)
    else:
        return
    estimate.steps_source = ("--max_train_steps" if stages is None and train.max_train_steps
                             else f"epochs x scene training clips // batch, the clips from {check.rows_source}")


def _schedule(plan: SweepPlan, first_alone: bool = False) -> None:
    """Each pending run, in order, on the set of GPUs (or slot) that frees first: the placement and the wall time."""
    per_run = plan.gpus_per_run
    sets = [tuple(plan.gpus[i * per_run:(i + 1) * per_run]) for i in range(plan.slots)] if plan.gpus else [None] * plan.slots
    decode = plan.decode_seconds or 0.0  # the store's build, before the runs it is for start
    free = [(0.0 if first_alone else decode, number) for number in range(plan.slots)]
    known = all(estimate.seconds is not None for estimate in plan.pending)
    for index, estimate in enumerate(plan.pending):
        at, number = heapq.heappop(free)
        estimate.gpus = sets[number]
        end = at + (estimate.seconds if known else 1.0)
        heapq.heappush(free, (end, number))
        if first_alone and index == 0:  # every slot waits for it (and the store's build after it)
            free = sorted((max(time, end) + decode, slot) for time, slot in free)
    if known:
        plan.wall_seconds = max((at for at, _ in free), default=0.0)
        plan.gpu_hours = sum(e.seconds * (e.run.processes if plan.gpus else 0) for e in plan.pending) / 3600


# --- text ---------------------------------------------------------------------------------------------


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def run_line(plan: SweepPlan, estimate: RunEstimate) -> str:
    where = f"GPU {','.join(map(str, estimate.gpus))}" if estimate.gpus else "no GPU"
    work = f"{estimate.steps:,} steps, {estimate.samples:,} samples" if estimate.steps is not None else "steps unknown"
    data, check = "", estimate.data
    if check is not None:
        data = "; data: " + ("built" if check.ready else "not here" if not check.here else "not all stored"
                             if estimate.store_clips else "stored by an earlier run")
        data += f", +{_size(estimate.store_bytes)} to the log-mel store" if estimate.store_bytes else ""
    time = f"≈ {_duration(estimate.seconds)}" if estimate.seconds is not None else "time unknown"
    return f"# {estimate.run.name}: {where}; {work}; {time}{data}"


def command_lines(plan: SweepPlan) -> list[str]:
    """Each run as a shell line with its GPUs (CUDA_VISIBLE_DEVICES=...), its estimate as a comment above it, then
    the totals as comments: what `--dry_run` prints."""
    lines = []
    for estimate in plan.runs:
        if estimate.finished:
            lines.append("# done: " + shlex.join(estimate.run.command))
            continue
        placement = f"CUDA_VISIBLE_DEVICES={cuda_visible_devices(estimate.gpus)} " if estimate.gpus else ""
        lines += [run_line(plan, estimate), placement + shlex.join(estimate.run.command)]
    return lines + [f"# {line}" for line in summary_lines(plan)]


def summary_lines(plan: SweepPlan) -> list[str]:
    pending, finished = plan.pending, len(plan.runs) - len(plan.pending)
    where = (f"GPUs {','.join(map(str, plan.gpus))}, {plan.gpus_per_run} per run, {plan.slots} run(s) at a time" if plan.gpus
             else f"no GPU, {plan.slots} run(s) at a time")
    store = sum(estimate.store_bytes for estimate in pending)
    sized = [estimate.run_bytes for estimate in pending if estimate.run_bytes is not None]
    disk = sum(sized) if len(sized) == len(pending) else None
    sources = Counter(estimate.steps_source or "unknown (a program the plan does not read, no finished run)" for estimate in pending)
    resuming = sum("--resume_from_checkpoint=latest" in estimate.run.command for estimate in pending)
    samples = sum(estimate.samples or 0 for estimate in pending)
    timing = ((f"{plan.gpu_hours:.2f} GPU-hours, " if plan.gpus else "") + f"wall time {_duration(plan.wall_seconds)}"
              if plan.wall_seconds is not None else "GPU-hours and wall time unknown" if plan.gpus else "wall time unknown")
    lines = [
        f"plan: {len(plan.runs)} runs, {finished} finished, {len(pending)} to run on {where}",
        "steps: " + "; ".join(f"{count} run(s) from {source}" for source, count in sources.items()),
        "throughput: " + (f"{plan.throughput:,.1f} samples/s per process ({plan.throughput_source})" if plan.throughput
                          else plan.throughput_source),
        "per-run overhead: " + (f"{plan.overhead:.1f} s ({plan.overhead_source})" if plan.overhead is not None
                                else plan.overhead_source),
        f"estimate: {samples:,} samples, {timing}" + (f" ({resuming} resuming from a checkpoint, counted whole)" if resuming else "")
        + (f"; it includes {_duration(plan.decode_seconds)} of decoding into the log-mel store before the runs start "
           "(one process; not GPU time)" if plan.decode_seconds else ""),
        "disk: " + (f"{len(pending)} run folders, {_size(disk / max(len(pending), 1))} each ({plan.disk_source})" if disk is not None
                    else "run folders unknown (no finished run, a program the plan does not read)")
        + f" + log-mel store {_size(store)} = {_size((disk or 0) + store)}",
    ]
    stores = Counter()
    for estimate in (estimate for estimate in pending if estimate.data is not None):
        stores[estimate.data.store] += estimate.store_clips
    data = sorted({f"  {line}" for e in pending if e.data is not None for line in e.data.lines})
    data += [f"  log-mel store {folder}: {'built' if not clips else f'{clips:,} clips to decode'}" for folder, clips in stores.items()]
    return lines + (["data:"] + data if data else [])


def comparison_lines(plan: SweepPlan, outcome) -> list[str]:
    """After the sweep: the estimate made before it against the wall time (and GPU-hours) measured."""
    if plan.wall_seconds is None or outcome.wall_seconds is None:  # no estimate made, or nothing ran
        return []
    line = f"estimate against measured: wall time {_duration(plan.wall_seconds)} estimated, {_duration(outcome.wall_seconds)} measured"
    if plan.wall_seconds:
        line += f" ({100 * (plan.wall_seconds / outcome.wall_seconds - 1):+.0f} %)"
    records = [json.loads(path.read_text()) for run in outcome.done if (path := run.output_dir / RUN_RECORD_FILE).is_file()]
    if plan.gpus and plan.gpu_hours is not None:
        line += (f"; {plan.gpu_hours:.2f} GPU-hours estimated, "
                 f"{sum(record['wall_seconds'] * len(record['gpus'] or ()) for record in records) / 3600:.2f} measured")
    ran = len(outcome.done) + len(outcome.failed)
    return [line + (f" (the estimate covers {len(plan.pending)} runs, {ran} ran)" if ran != len(plan.pending) else "")]
