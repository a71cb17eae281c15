"""A training run: arguments, data preparation, the loop and its step, augmentation, loss balancing, evaluation,
checkpoints and the run's results.json."""
