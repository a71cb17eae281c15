"""results.json's one reader and writer: files of every version read, and what is read is written back unchanged."""

import json

import pytest

from sceneevent.training.results import FinalMetrics, ResultsError, RunResults, read_results, write_results

# A schema-2 file as the loop wrote it before the schema became a dataclass, with a key no version knows.
WRITTEN_BEFORE = {
    "schema_version": 2,
    "config": {"alpha": 0.9, "seed": 3},
    "alpha": 0.9,
    "seed": 3,
    "history": [{"epoch": 1, "val_asc_macro_accuracy": 0.5}],
    "final": {"asc_macro_accuracy": 0.75, "aet_lwlrap": 0.5, "best_epoch": 1, "selected_by": "val_asc_macro_accuracy",
              "val_asc_macro_accuracy": 0.5, "loss_asc": 1.25, "loss_aet": 0.25,
              "last_epoch": {"epoch": 1, "asc_macro_accuracy": 0.75, "aet_lwlrap": 0.5}},
    "steps": 12,
    "wall_time_seconds": 3.5,
    "train_runtime": 3.0,
    "train_samples_per_second": 100.0,
    "train_steps_per_second": 4.0,
    "eval_runtime": 0.5,
    "first_step_runtime": 0.25,
    "train_steady_samples_per_second": 120.0,
    "data_wait_fraction": 0.0,
    "data": {"scene_labels": ["a", "b"]},
    "environment": {"device": "cpu"},
    "a_key_from_elsewhere": [1, 2],
}


def test_a_file_written_before_reads_typed_and_writes_back_byte_for_byte(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(WRITTEN_BEFORE, indent=2) + "\n")
    results = read_results(tmp_path)
    assert results.final.selected_by == "val_asc_macro_accuracy" and results.final.selected_value == 0.5
    assert results.final.asc_macro_accuracy == 0.75 and results.alpha == 0.9 and results.steps == 12
    assert results.extra == {"a_key_from_elsewhere": [1, 2]}
    again = tmp_path / "again"
    write_results(again, results)
    assert (again / "results.json").read_text() == (tmp_path / "results.json").read_text()


def test_a_run_without_selection_and_a_pretrained_run_keep_their_keys():
    final = FinalMetrics(asc_macro_accuracy=0.5, best_epoch=2, selected_by="last_epoch", aet_lwlrap_pretrained=0.25,
                         floor_asc_macro_accuracy=0.625, floor_c=0.1)
    written = RunResults(schema_version=2, final=final, pretrain={"steps": 4}).to_dict()
    assert list(written["final"]) == ["asc_macro_accuracy", "aet_lwlrap", "best_epoch", "selected_by", "loss_asc",
                                      "loss_aet", "last_epoch", "aet_lwlrap_pretrained", "floor_asc_macro_accuracy", "floor_c"]
    assert RunResults(final=final).clears_floor is False and RunResults().clears_floor is None
    assert written["pretrain"] == {"steps": 4} and RunResults.from_dict(written).to_dict() == written


def test_old_results_are_refused_for_readings_and_read_for_display(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"alpha": 0.0, "final": {"asc_macro_accuracy": 0.5}}))
    with pytest.raises(ResultsError, match="chosen on test data"):
        read_results(tmp_path)
    old = read_results(tmp_path / "results.json", require_validation_selection=False)
    assert old.schema_version == 1 and not old.selected_on_validation and old.final.asc_macro_accuracy == 0.5


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ("[1]", "must be a JSON object")])
def test_broken_files_are_named(tmp_path, text, message):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ResultsError, match=rf"{tmp_path}.*{message}"):
        read_results(tmp_path)
    with pytest.raises(ResultsError, match="no results.json"):
        read_results(tmp_path / "missing")
