import pytest
import torch

from sceneevent.training.augment import MixUp, SpecAugment
from sceneevent.data.loader import join_task_batches
from sceneevent.models.losses import IGNORE_INDEX


def test_specaugment_masks_are_bands_within_the_widths():
    torch.manual_seed(0)
    augment = SpecAugment(freq_masks=1, freq_mask_width=5, time_masks=1, time_mask_width=7)
    mask = augment.mask(torch.Size((64, 32, 100)), torch.device("cpu"))
    for clip in mask:
        freq_rows = clip.all(dim=1)  # bins masked over all frames
        time_cols = clip.all(dim=0)
        assert freq_rows.sum() <= 5 and time_cols.sum() <= 7
        # a mask is one contiguous band
        for band in (freq_rows, time_cols):
            idx = torch.nonzero(band).flatten()
            if idx.numel():
                assert idx.max() - idx.min() + 1 == idx.numel()
        # every masked cell lies in a masked band
        assert torch.equal(clip, freq_rows[:, None] | time_cols[None, :])
    assert mask.any(), "some mask must be drawn over 64 clips"


def test_specaugment_fills_with_clip_mean_and_is_off_in_eval():
    augment = SpecAugment(freq_masks=2, freq_mask_width=6, time_masks=2, time_mask_width=6)
    x = torch.randn(8, 20, 50)
    torch.manual_seed(1)
    y = augment(x)
    changed = y != x
    assert changed.any()
    means = x.mean(dim=(1, 2))
    for clip in range(8):
        assert torch.allclose(y[clip][changed[clip]], means[clip].expand(int(changed[clip].sum())))
    assert torch.equal(augment.eval()(x), x)


def test_mixup_scene_targets_are_soft_one_hot_and_features_mix_the_same_way():
    torch.manual_seed(0)
    mixup = MixUp(alpha=0.4)
    x = torch.randn(16, 8, 10)
    labels = torch.arange(16) % 4
    mixed, targets = mixup(x, labels, num_classes=4)
    assert targets.shape == (16, 4)
    torch.testing.assert_close(targets.sum(-1), torch.ones(16))
    # the dominant weight is the clip's own class, lambda >= 0.5
    own = targets[torch.arange(16), labels]
    assert (own >= 0.5 - 1e-6).all()
    # a mixed row is the convex combination lam * x_i + (1 - lam) * x_j for some partner j
    for i in range(16):
        lam = own[i].item() if targets[i].max() < 1 else 1.0
        residual = mixed[i] - lam * x[i]
        if lam < 1.0:
            partner = min(range(16), key=lambda j: (residual - (1 - lam) * x[j]).abs().max().item())
            torch.testing.assert_close(residual, (1 - lam) * x[partner], atol=1e-5, rtol=1e-4)


def test_mixup_event_targets_are_mixed_multi_hot():
    torch.manual_seed(3)
    targets = torch.tensor([[1.0, 0, 1], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    _, mixed = MixUp(alpha=1.0)(torch.randn(4, 5, 6), targets)
    assert ((mixed >= 0) & (mixed <= 1)).all()
    assert (mixed >= 0.5 * targets - 1e-6).all()  # own labels keep at least lambda >= 0.5


def test_mixup_passes_through_in_eval():
    x, labels = torch.randn(4, 3, 5), torch.tensor([0, 1, 2, 0])
    mixed, targets = MixUp().eval()(x, labels, num_classes=3)
    assert torch.equal(mixed, x)
    assert torch.equal(targets, torch.nn.functional.one_hot(labels, 3).float())


def test_join_fills_the_other_task_with_ignore():
    asc = {"input_features": torch.randn(64, 8, 10), "scene_labels": torch.randint(0, 10, (64,))}
    aet = {"input_features": torch.randn(128, 8, 10), "event_labels": torch.randint(0, 2, (128, 40)).float()}
    batch = join_task_batches(asc, aet, num_scenes=10, num_events=40)
    assert batch["input_features"].shape == (192, 8, 10)
    assert (batch["scene_labels"][64:] == IGNORE_INDEX).all() and (batch["scene_labels"][:64] >= 0).all()
    assert (batch["event_labels"][:64] == IGNORE_INDEX).all() and (batch["event_labels"][64:] >= 0).all()
    soft = {"input_features": asc["input_features"], "scene_labels": torch.full((64, 10), 0.1)}
    batch = join_task_batches(soft, aet, num_scenes=10, num_events=40)
    assert batch["scene_labels"].shape == (192, 10) and (batch["scene_labels"][64:] == IGNORE_INDEX).all()
    only_events = join_task_batches(None, aet, num_scenes=10, num_events=40)
    assert "scene_labels" not in only_events and only_events["event_labels"].shape == (128, 40)
    with pytest.raises(ValueError):
        join_task_batches(None, None, 10, 40)
