"""Cut long recordings into fixed clips: an audiofolder whose metadata.csv names each clip's recording.

    python scripts/cut_clips.py --input_dir field_recordings/ --output_dir data/my_scenes --clip_seconds 10
    python scripts/cut_clips.py --input_dir field_recordings/ --output_dir data/my_scenes --hop_seconds 5 --min_seconds 5
    accelerate launch scripts/train_joint.py --asc_dataset data/my_scenes --encoder_pretrained timm/resnet18.a1_in1k

`--input_dir` holds `<scene>/<recording>` files (WAV, FLAC, OGG Vorbis, MP3; any rate and channel count). The
output holds `<scene>/<recording>_<start ms>.flac` clips and `metadata.csv` (`file_name, scene, identifier,
start_seconds, duration_seconds`; `identifier` = the source recording), so that train_joint.py draws its test
and validation splits by recording. See docs/own_recordings.md; `--help` lists every argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sceneevent.data.clips import FORMATS, cut_recordings
from sceneevent.training.arguments import parse_args


@dataclass
class CutArguments:
    input_dir: str = field(metadata={"help": "Folder of <scene>/<recording> audio files."})
    output_dir: str = field(metadata={"help": "Folder to write the clips and metadata.csv to (written atomically)."})
    clip_seconds: float = field(default=10.0, metadata={"help": "Length of each clip in seconds."})
    hop_seconds: float | None = field(default=None, metadata={"help": "Seconds between clip starts. Default: --clip_seconds "
                                                              "(no overlap); less overlaps the clips."})
    min_seconds: float | None = field(default=None, metadata={"help": "Shortest last clip of a recording to keep (shorter "
                                                              "tails are dropped). Default: --clip_seconds (whole clips only)."})
    format: str = field(default="flac", metadata={"help": f"Clip format: one of {', '.join(FORMATS)} (FLAC 24-bit, or WAV "
                                                  "32-bit float)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace --output_dir if it holds files."})


def main(args: list[str] | None = None) -> None:
    arguments = parse_args((CutArguments,), args)
    summary = cut_recordings(arguments.input_dir, arguments.output_dir, clip_seconds=arguments.clip_seconds,
                             hop_seconds=arguments.hop_seconds, min_seconds=arguments.min_seconds,
                             audio_format=arguments.format, overwrite=arguments.overwrite_output_dir)
    print(f"{summary.clips} clips from {summary.recordings} recordings → {arguments.output_dir}")
    if summary.too_short:
        print(f"{len(summary.too_short)} recording(s) shorter than --min_seconds, not cut: {'; '.join(summary.too_short)}")


if __name__ == "__main__":
    main()
