"""Pre-train on acoustic events (alpha = 1), then fine-tune on scenes (alpha = 0) with a fresh scene head.

    accelerate launch scripts/pretrain_finetune.py --pretrain_epochs 5 --finetune_epochs 5 --output_dir outputs/pretrain_finetune

Takes every flag of train_joint.py (--alpha is ignored: the stages fix it) and writes the same
results.json schema, with config.mode = "pretrain_finetune", so reports can set it beside joint training.
"""

from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
from sceneevent.training.pretraining import PretrainArguments, pretrain_then_finetune


def main(args=None):
    model_args, data_args, train_args, stages = parse_args(
        (ModelArguments, DataArguments, JointTrainingArguments, PretrainArguments), args
    )
    return pretrain_then_finetune(model_args, data_args, train_args, stages)


if __name__ == "__main__":
    main()
