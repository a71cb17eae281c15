"""Train one network on acoustic scenes and acoustic events together (Parikh et al., Interspeech 2022).

    accelerate launch scripts/train_joint.py                       # embedded synthetic data, alpha 0.95
    accelerate launch scripts/train_joint.py --alpha 0 --output_dir outputs/asc_only
    accelerate launch scripts/train_joint.py --config my_run.yaml --report_to wandb
    accelerate launch scripts/train_joint.py --push_to_hub --hub_model_id me/sceneevent-tut2018

Every step sees --asc_batch_size scene clips + --aet_batch_size event clips (64 + 128 by default);
the loss is alpha * L_AET + (1 - alpha) * L_ASC. The run folder receives the best model (by scene
accuracy), its feature extractor and results.json. `--help` lists every argument.
"""

import sys

from accelerate import PartialState

from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
from sceneevent.training.loop import train


def main(args=None):
    model_args, data_args, train_args = parse_args((ModelArguments, DataArguments, JointTrainingArguments), args)
    results = train(model_args, data_args, train_args)
    if train_args.push_to_hub and PartialState().is_main_process:
        from sceneevent.inference.hub import HubPushError, push_run_to_hub

        try:
            url = push_run_to_hub(
                train_args.output_dir, train_args.hub_model_id, private=train_args.hub_private, revision=train_args.hub_revision
            )
            print(f"pushed to {url}")
        except HubPushError as error:
            sys.exit(f"training finished and {train_args.output_dir} is complete, but the push failed: {error}")
    return results


if __name__ == "__main__":
    main()
