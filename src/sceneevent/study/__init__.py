"""The paper's study: W&B sweeps and their local runner, the report over many runs, and the mini reproduction
on synthetic data."""
