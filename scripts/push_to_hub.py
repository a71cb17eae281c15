"""Upload a finished run folder to the Hugging Face Hub, with a generated model card.

    python scripts/push_to_hub.py outputs/joint --hub_model_id user/sceneevent-tut2018
    python scripts/push_to_hub.py outputs/joint --hub_model_id org/sceneevent --hub_private --hub_revision alpha-0.95

Uploads model.safetensors, config.json, preprocessor_config.json, the model's custom code
(*.py) and README.md (the card, rendered from config.json and results.json); never checkpoints/
or wandb/. Needs a token (`hf auth login` or HF_TOKEN). Without one, or without network, it stops
within seconds and leaves the run folder unchanged; after a successful push the folder's README.md
is the card that was uploaded. `--help` lists every argument.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from sceneevent.inference.hub import HubPushError, push_run_to_hub


@dataclass
class PushArguments:
    hub_model_id: str = field(metadata={"help": "Hub repository to push to, user/name or org/name (created if missing)."})
    hub_private: bool = field(default=False, metadata={"help": "Create the repository as private (an existing one keeps its visibility)."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to, created from main if missing. Default: main."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message. Default: 'Upload sceneevent model'."})


def parse(args: list[str] | None = None) -> tuple[str, PushArguments]:
    parser = HfArgumentParser(PushArguments)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="Run folder written by train_joint.py (or save_pretrained).")
    options, namespace = parser.parse_args_into_dataclasses(args=args)
    return namespace.run_dir, options


def main(args: list[str] | None = None) -> int:
    run_dir, options = parse(args)
    try:
        url = push_run_to_hub(run_dir, options.hub_model_id, private=options.hub_private,
                              revision=options.hub_revision, commit_message=options.commit_message)
    except (HubPushError, FileNotFoundError, ValueError) as error:
        print(f"push_to_hub: {error}", file=sys.stderr)
        return 1
    print(f"pushed {run_dir} → {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
