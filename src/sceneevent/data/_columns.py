"""Column helpers shared by the real-data loaders: zero-copy relabelling of Arrow-backed datasets.

Hub data sets keep audio bytes inside their Arrow files (tens of GB to TB). `Dataset.cast` and
`Dataset.map` over such a table rewrite every byte, so these helpers change what the columns *mean*
(features) or add small columns without touching the audio storage.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
import pyarrow as pa
from datasets.table import InMemoryTable

from .audio import AUDIO_FEATURE


def dataset_from_arrow(table: pa.Table, features: datasets.Features, split: str | None = None) -> datasets.Dataset:
    """An in-memory `Dataset` from an Arrow table whose types already match `features` (no per-row encode)."""
    table = table.replace_schema_metadata(None)
    return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=features), split=split)


def with_plain_audio(dataset: datasets.Dataset, column: str = "audio") -> datasets.Dataset:
    """Re-declare an `Audio` column as the plain `{"bytes", "path"}` struct, without decoding or copying.

    `datasets.Audio` needs torchcodec to decode or encode; its Arrow storage is exactly `AUDIO_FEATURE`,
    so swapping the declared feature is enough. Other columns are kept as they are.
    """
    feature = dataset.features[column]
    if feature == AUDIO_FEATURE:
        return dataset
    if not isinstance(feature, datasets.Audio) and not (isinstance(feature, dict) and "path" in feature):
        raise ValueError(f"column {column!r} is {feature}, expected an audio column (datasets.Audio or a bytes/path struct)")
    if dataset._indices is not None:  # the zero-copy route needs the table in row order
        dataset = dataset.flatten_indices()
    if isinstance(feature, dict) and set(feature) != set(AUDIO_FEATURE):
        return dataset.cast_column(column, AUDIO_FEATURE)
    features = dataset.features.copy()
    features[column] = AUDIO_FEATURE
    # Same Arrow type, new declared feature: the memory-mapped table is shared, nothing is rewritten.
    table = dataset.data.replace_schema_metadata(None)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features), split=dataset.split)


def replace_column(
    dataset: datasets.Dataset,
    input_column: str,
    output_column: str,
    function: Callable,
    feature,
    num_proc: int | None = None,
    desc: str | None = None,
    fn_kwargs: dict | None = None,
) -> datasets.Dataset:
    """Compute `output_column` from `input_column` with a batched Arrow function and swap it in.

    Only the small input column is mapped and written; the result is joined back column-wise, so a
    large `audio` column is never rewritten (unless the dataset carries an indices mapping).
    `function(column: pa.ChunkedArray, **fn_kwargs) -> pa.Array` for one batch.
    """
    small = dataset.select_columns([input_column]).with_format("arrow")
    new = small.map(
        _apply_to_column,
        batched=True,
        input_columns=[input_column],
        remove_columns=[input_column],
        features=datasets.Features({output_column: feature}),
        fn_kwargs={"function": function, "output_column": output_column, "fn_kwargs": fn_kwargs or {}},
        num_proc=num_proc,
        desc=desc,
    ).with_format(None)
    rest = dataset.remove_columns([input_column])
    if output_column in rest.column_names:
        rest = rest.remove_columns([output_column])
    if not rest.column_names:
        return new
    return datasets.concatenate_datasets([rest, new], axis=1)


def _apply_to_column(column: pa.ChunkedArray, function: Callable, output_column: str, fn_kwargs: dict) -> pa.Table:
    return pa.table({output_column: function(column, **fn_kwargs)})
