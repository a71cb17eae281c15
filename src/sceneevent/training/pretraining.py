"""Pre-train on the event task, then fine-tune on the scene task (the paper's Section 4.5 baseline).

Two ordinary runs of `training.train`: stage 1 with alpha = 1 into `OUTPUT_DIR/pretrain`, stage 2
with alpha = 0 from the stage-1 model, with a fresh scene head, into `OUTPUT_DIR`. The budget is
counted like joint training: epochs of the scene training set, `pretrain_epochs + finetune_epochs`
in all. `OUTPUT_DIR/results.json` has the joint schema with `config.mode = "pretrain_finetune"`,
the summed steps and wall time, and the stage-1 results under `pretrain`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .arguments import DataArguments, JointTrainingArguments, ModelArguments
from .loop import train
from .results import RunResults, has_results, read_results, write_results


@dataclasses.dataclass
class PretrainArguments:
    pretrain_epochs: int = dataclasses.field(default=5, metadata={"help": "Epochs of event-only pre-training (alpha = 1)."})
    finetune_epochs: int = dataclasses.field(default=5, metadata={"help": "Epochs of scene-only fine-tuning (alpha = 0)."})


def pretrain_then_finetune(
    model_args: ModelArguments, data_args: DataArguments, train_args: JointTrainingArguments, stages: PretrainArguments
) -> RunResults:
    if stages.pretrain_epochs <= 0 or stages.finetune_epochs <= 0:
        raise ValueError("--pretrain_epochs and --finetune_epochs must be positive")
    output_dir = Path(train_args.output_dir)
    if has_results(output_dir) and not train_args.overwrite_output_dir:
        raise ValueError(f"--output_dir {output_dir} already holds a finished run; pass --overwrite_output_dir to replace it")
    pretrain_dir = output_dir / "pretrain"
    common = dict(max_train_steps=None, push_to_hub=False, resume_from_checkpoint=None)

    if has_results(pretrain_dir) and not train_args.overwrite_output_dir:
        pretrained = read_results(pretrain_dir)  # a finished stage 1 is reused (a killed run resumes here)
    else:
        pretrained = train(
            model_args,
            data_args,
            dataclasses.replace(train_args, output_dir=str(pretrain_dir), alpha="1", loss_balancing="fixed",
                                num_train_epochs=stages.pretrain_epochs, **common),
            mode="pretrain",
        )
    finetune_model = dataclasses.replace(model_args, model_name_or_path=str(pretrain_dir), reinit_scene_head=True)
    finetuned = train(
        finetune_model,
        data_args,
        dataclasses.replace(train_args, alpha="0", loss_balancing="fixed", num_train_epochs=stages.finetune_epochs,
                            overwrite_output_dir=True, **common),
        mode="pretrain_finetune",
    )
    finetuned.config.update(dataclasses.asdict(stages))
    finetuned.steps += pretrained.steps
    finetuned.wall_time_seconds += pretrained.wall_time_seconds
    finetuned.final.aet_lwlrap_pretrained = pretrained.final.aet_lwlrap
    stage_one = pretrained.to_dict()
    finetuned.pretrain = {key: stage_one[key] for key in ("final", "history", "steps", "wall_time_seconds", "data")}
    write_results(output_dir, finetuned)
    return finetuned
