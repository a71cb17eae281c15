"""Scene macro-average accuracy and event lwlrap: plain functions, and `evaluate` modules that ship here."""

from __future__ import annotations

from pathlib import Path

from .functional import lwlrap, macro_accuracy

METRICS_DIR = Path(__file__).parent


def load_metric(name: str):
    """Load the packaged `evaluate` module `macro_accuracy` or `lwlrap` (offline: no Hub fetch)."""
    import evaluate

    path = METRICS_DIR / name
    if not (path / f"{name}.py").exists():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").exists())
        raise ValueError(f"no packaged metric {name!r}; available: {available}")
    return evaluate.load(str(path))


__all__ = ["load_metric", "lwlrap", "macro_accuracy"]
