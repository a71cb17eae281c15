"""Loss balancing, balanced alpha, task-gradient diagnostics, and pre-train then fine-tune."""

import json

import pytest
import torch
from torch import nn

from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
from sceneevent.training.balancing import LossBalancer, balanced_alpha, task_gradient_stats
from sceneevent.training.pretraining import PretrainArguments, pretrain_then_finetune
from sceneevent.training.checks import resolve_alpha
from sceneevent.training.results import RunResults

from test_train_joint import SMALL, in_process


def write_results(folder, alpha, loss_asc=None, loss_aet=None):
    folder.mkdir(parents=True)
    payload = {"schema_version": 2, "alpha": alpha, "final": {"loss_asc": loss_asc, "loss_aet": loss_aet}}
    (folder / "results.json").write_text(json.dumps(payload))
    return str(folder)


def test_auto_alpha_balances_the_baselines_converged_losses(tmp_path):
    asc = write_results(tmp_path / "asc", 0.0, loss_asc=0.9)
    aet = write_results(tmp_path / "aet", 1.0, loss_aet=0.05)
    args = JointTrainingArguments(alpha="auto", asc_baseline=asc, aet_baseline=aet)
    assert resolve_alpha(args) == pytest.approx(0.9 / 0.95)
    # at that alpha the two weighted losses are equal
    alpha = resolve_alpha(args)
    assert alpha * 0.05 == pytest.approx((1 - alpha) * 0.9)
    with pytest.raises(ValueError, match="alpha=0"):
        balanced_alpha(RunResults(alpha=0.5), RunResults(alpha=1.0))
    with pytest.raises(ValueError, match="--asc_baseline"):
        resolve_alpha(JointTrainingArguments(alpha="auto"))
    with pytest.raises(ValueError, match="no results.json"):
        resolve_alpha(JointTrainingArguments(alpha="auto", asc_baseline=str(tmp_path), aet_baseline=aet))
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps({"alpha": 0.0, "final": {"loss_asc": 0.9}}))  # no schema_version
    with pytest.raises(ValueError, match="chosen on test data"):
        resolve_alpha(JointTrainingArguments(alpha="auto", asc_baseline=str(old), aet_baseline=aet))


def test_auto_alpha_run_records_the_value_used(tmp_path):
    asc = write_results(tmp_path / "asc", 0.0, loss_asc=1.5)
    aet = write_results(tmp_path / "aet", 1.0, loss_aet=0.5)
    results = in_process("--output_dir", str(tmp_path / "run"), "--alpha", "auto", "--asc_baseline", asc, "--aet_baseline", aet, *SMALL)
    assert results["alpha"] == pytest.approx(0.75) and results["config"]["alpha"] == pytest.approx(0.75)


@pytest.mark.parametrize("mode", ["fixed", "uncertainty", "dwa"])
def test_each_balancing_mode_trains_and_records_its_weights(tmp_path, mode):
    results = in_process("--output_dir", str(tmp_path), "--loss_balancing", mode, "--alpha", "0.8", *SMALL)
    weights = results["history"][0]["loss_weights"]
    assert set(weights) == {"asc", "aet"}
    if mode == "fixed":
        assert weights == pytest.approx({"asc": 0.2, "aet": 0.8})
        # One loss path: what was optimised (and logged) is the model's own alpha-weighted loss, and the
        # saved model carries that alpha.
        epoch = results["history"][0]
        assert epoch["train_loss"] == pytest.approx(0.8 * epoch["train_loss_aet"] + 0.2 * epoch["train_loss_asc"], rel=1e-6)  # float32 steps
        assert json.loads((tmp_path / "config.json").read_text())["alpha"] == 0.8
    elif mode == "dwa":
        assert weights == {"asc": 1.0, "aet": 1.0}  # DWA starts equal, moves after two epochs
    else:
        assert weights["asc"] != 1.0 and weights["aet"] != 1.0  # learned log-variances moved


def test_uncertainty_and_dwa_formulas():
    balancer = LossBalancer("uncertainty")
    with torch.no_grad():
        balancer.log_vars.copy_(torch.tensor([0.5, -1.0]))
    loss = balancer(torch.tensor(2.0), torch.tensor(0.1))
    expected = torch.exp(torch.tensor(-0.5)) * 2.0 + 0.5 + torch.exp(torch.tensor(1.0)) * 0.1 - 1.0
    torch.testing.assert_close(loss, expected)

    dwa = LossBalancer("dwa")
    dwa.end_epoch([{"train_loss_asc": 2.0, "train_loss_aet": 1.0}, {"train_loss_asc": 1.0, "train_loss_aet": 0.9}])
    ratios = torch.tensor([0.5, 0.9])
    expected = 2 * torch.softmax(ratios / 2.0, dim=0)
    assert dwa.weights() == pytest.approx({"asc": expected[0].item(), "aet": expected[1].item()})
    torch.testing.assert_close(dwa(torch.tensor(1.0), torch.tensor(1.0)), expected.sum())
    with pytest.raises(ValueError, match="must be one of uncertainty, dwa"):
        LossBalancer("magic")
    with pytest.raises(ValueError, match="fixed alpha is the model's own loss"):
        LossBalancer("fixed")


def test_gradient_cosine_equals_a_hand_computation():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    scene_head, event_head = nn.Linear(3, 2), nn.Linear(3, 6)
    x = torch.randn(7, 5)
    hidden = encoder(x)
    loss_asc = nn.functional.cross_entropy(scene_head(hidden), torch.tensor([0, 1, 1, 0, 1, 0, 0]))
    loss_aet = nn.functional.binary_cross_entropy_with_logits(event_head(hidden), torch.rand(7, 6).round())
    params = list(encoder.parameters())
    stats = task_gradient_stats(params, 0.3 * loss_asc, 0.7 * loss_aet)

    by_hand = []
    for loss in (0.3 * loss_asc, 0.7 * loss_aet):
        encoder.zero_grad()
        loss.backward(retain_graph=True)
        by_hand.append(torch.cat([p.grad.reshape(-1).clone() for p in params]))
    cosine = torch.dot(by_hand[0], by_hand[1]) / (by_hand[0].norm() * by_hand[1].norm())
    assert stats["cosine"] == pytest.approx(cosine.item(), rel=1e-5)
    assert stats["grad_norm_asc"] == pytest.approx(by_hand[0].norm().item(), rel=1e-5)
    assert stats["grad_norm_aet"] == pytest.approx(by_hand[1].norm().item(), rel=1e-5)


def test_task_gradients_are_logged_to_results(tmp_path):
    results = in_process("--output_dir", str(tmp_path), "--log_task_gradients", "1", *SMALL)
    entries = results["history"][0]["task_gradients"]
    assert [entry["step"] for entry in entries] == [1, 2]
    for entry in entries:
        assert -1.0 <= entry["cosine"] <= 1.0 and entry["grad_norm_asc"] > 0 and entry["grad_norm_aet"] > 0


def test_pretrain_then_finetune_has_the_joint_schema_and_summed_budget(tmp_path):
    flags = [f for f in SMALL if f not in ("--max_train_steps", "2")]
    model_args, data_args, train_args, stages = parse_args(
        (ModelArguments, DataArguments, JointTrainingArguments, PretrainArguments),
        ["--output_dir", str(tmp_path), "--pretrain_epochs", "1", "--finetune_epochs", "1", *flags],
    )
    results = pretrain_then_finetune(model_args, data_args, train_args, stages).to_dict()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["config"]["mode"] == "pretrain_finetune" and on_disk["alpha"] == 0.0
    assert on_disk["steps"] == results["pretrain"]["steps"] * 2 == 16  # 64 clips / 8 per step, 1 + 1 epochs
    assert on_disk["final"]["asc_macro_accuracy"] is not None and on_disk["final"]["aet_lwlrap_pretrained"] > 0
    assert (tmp_path / "pretrain" / "results.json").exists() and (tmp_path / "model.safetensors").exists()


def test_uncertainty_log_variances_survive_the_checkpoint_state():
    trained = LossBalancer("uncertainty")
    with torch.no_grad():
        trained.log_vars.copy_(torch.tensor([0.25, -1.5]))
    state = json.loads(json.dumps(trained.state()))  # as the trainer state file stores it
    resumed = LossBalancer("uncertainty")
    resumed.load_state(state)
    assert resumed.log_vars.tolist() == [0.25, -1.5]
    assert resumed.weights() == pytest.approx(trained.weights())
