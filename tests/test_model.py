import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from sceneevent import LogMelFeatureExtractor, SceneEventConfig, SceneEventModel
from sceneevent.models.losses import IGNORE_INDEX

SCENES = ["airport", "bus", "park"]
EVENTS = ["Speech", "Music", "Dog", "Bird"]


def tiny_model(alpha=0.3, **kwargs) -> SceneEventModel:
    torch.manual_seed(0)
    config = SceneEventConfig(scene_labels=SCENES, event_labels=EVENTS, alpha=alpha, encoder="resnet10t", num_mel_bins=16, **kwargs)
    return SceneEventModel(config).eval()


@pytest.mark.parametrize(
    "shape",
    [(2, 16, 40), (2, 1, 16, 40), (1, 16, 101), (5, 16, 33)],
)
def test_forward_shapes(shape):
    model = tiny_model()
    out = model(torch.randn(shape))
    batch = shape[0]
    assert out.scene_logits.shape == (batch, len(SCENES))
    assert out.event_logits.shape == (batch, len(EVENTS))
    assert out.logits is out.scene_logits
    assert out.embeddings.shape == (batch, model.encoder.num_features)
    assert out.loss is None and out.loss_asc is None and out.loss_aet is None
    assert not torch.isnan(out.scene_logits).any()


def test_loss_is_exactly_the_alpha_weighted_sum_with_masked_rows():
    model = tiny_model(alpha=0.3)
    x = torch.randn(4, 16, 40)
    # rows 0-1 are scene clips, rows 2-3 event clips
    scene_labels = torch.tensor([2, 0, IGNORE_INDEX, IGNORE_INDEX])
    event_labels = torch.tensor([[IGNORE_INDEX] * 4, [IGNORE_INDEX] * 4, [1.0, 0, 0, 1], [0, 1.0, 0, 0]])
    out = model(x, scene_labels=scene_labels, event_labels=event_labels)

    expected_asc = F.cross_entropy(out.scene_logits[:2], scene_labels[:2])
    expected_aet = F.binary_cross_entropy_with_logits(out.event_logits[2:], event_labels[2:])
    torch.testing.assert_close(out.loss_asc, expected_asc)
    torch.testing.assert_close(out.loss_aet, expected_aet)
    torch.testing.assert_close(out.loss, 0.3 * expected_aet + 0.7 * expected_asc)


def test_soft_scene_targets_match_hard_targets_when_one_hot():
    model = tiny_model()
    x = torch.randn(3, 16, 40)
    hard = torch.tensor([0, 2, 1])
    soft = F.one_hot(hard, 3).float()
    torch.testing.assert_close(model(x, scene_labels=hard).loss_asc, model(x, scene_labels=soft).loss_asc)
    mixed = torch.tensor([[0.7, 0.3, 0.0], [IGNORE_INDEX] * 3, [0.0, 0.4, 0.6]])
    out = model(x, scene_labels=mixed)
    log_p = F.log_softmax(out.scene_logits, dim=-1)
    expected = -(mixed[[0, 2]] * log_p[[0, 2]]).sum(-1).mean()
    torch.testing.assert_close(out.loss_asc, expected)


@pytest.mark.parametrize("alpha,expect", [(0.0, "asc"), (1.0, "aet")])
def test_alpha_extremes_keep_only_one_task(alpha, expect):
    model = tiny_model(alpha=alpha)
    x = torch.randn(2, 16, 40)
    out = model(x, scene_labels=torch.tensor([0, 1]), event_labels=torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 1.0]]))
    torch.testing.assert_close(out.loss, out.loss_asc if expect == "asc" else out.loss_aet)


def test_rows_without_any_label_give_zero_loss_not_nan():
    model = tiny_model()
    out = model(torch.randn(2, 16, 40), scene_labels=torch.full((2,), IGNORE_INDEX))
    assert out.loss_asc.item() == 0.0


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_config_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match="alpha"):
        SceneEventConfig(scene_labels=SCENES, event_labels=EVENTS, alpha=alpha)


def test_config_rejects_duplicate_labels():
    with pytest.raises(ValueError, match="duplicate"):
        SceneEventConfig(scene_labels=["a", "a"], event_labels=EVENTS)


@pytest.mark.parametrize("shape", [(2, 15, 40), (2, 2, 16, 40), (16, 40)])
def test_wrongly_shaped_input_is_a_clear_error(shape):
    with pytest.raises(ValueError, match="input_features"):
        tiny_model()(torch.randn(shape))


def test_label_not_in_config_is_a_clear_error():
    with pytest.raises(ValueError, match="not a class of the config"):
        tiny_model()(torch.randn(2, 16, 40), scene_labels=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="event_labels"):
        tiny_model()(torch.randn(2, 16, 40), event_labels=torch.ones(2, 9))


@pytest.mark.parametrize("mode", ["hard scene labels", "soft scene labels", "no labels", "eval"])
def test_model_traces_as_one_graph_for_torch_compile(mode):
    """A graph break splits the compiled step and costs speed (issue 13): every way training and evaluation
    call the model must trace as one graph (dynamo's explain traces only; no compiler runs)."""
    model = tiny_model().train()
    scene = torch.tensor([2, 0, IGNORE_INDEX, IGNORE_INDEX])
    events = torch.tensor([[IGNORE_INDEX] * 4, [IGNORE_INDEX] * 4, [1.0, 0, 0, 1], [0, 1.0, 0, 0]])
    labels = {
        "hard scene labels": {"scene_labels": scene, "event_labels": events},
        "soft scene labels": {"scene_labels": torch.where(scene[:, None] >= 0, F.one_hot(scene.clamp_min(0), 3).float(),
                                                          float(IGNORE_INDEX)), "event_labels": events},
        "no labels": {},
        "eval": {},
    }[mode]
    if mode == "eval":
        model.eval()
    explained = torch._dynamo.explain(model)(torch.randn(4, 16, 40), **labels)
    assert explained.graph_break_count == 0, [str(reason.reason)[:300] for reason in explained.break_reasons]
    assert explained.graph_count == 1


def test_save_and_reload_through_auto_classes(tmp_path):
    model = tiny_model(alpha=0.42, dropout=0.1)
    extractor = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=8000, clip_seconds=0.5)
    model.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_sceneevent.py"} <= {
        p.name for p in tmp_path.iterdir()
    }

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, SceneEventConfig)
    assert config.alpha == 0.42 and config.dropout == 0.1 and config.encoder == "resnet10t"
    assert config.scene_labels == SCENES and config.event_labels == EVENTS
    assert config.event_label2id["Dog"] == 2 and config.label2id["park"] == 2
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, SceneEventModel)
    reloaded_extractor = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(reloaded_extractor, LogMelFeatureExtractor)
    assert reloaded_extractor.to_dict() == extractor.to_dict()

    x = torch.randn(2, 16, 21)
    torch.testing.assert_close(reloaded(x).scene_logits, model(x).scene_logits)
    torch.testing.assert_close(reloaded(x).event_logits, model(x).event_logits)


def test_config_round_trip_keeps_unknown_keys_out_of_labels(tmp_path):
    config = SceneEventConfig(scene_labels=SCENES, event_labels=EVENTS, alpha=0.9)
    config.save_pretrained(tmp_path)
    again = SceneEventConfig.from_pretrained(tmp_path)
    assert again.to_dict()["event_labels"] == EVENTS
    assert again.num_scenes == 3 and again.num_events == 4


def test_encoder_from_a_local_weights_file_and_the_saved_model_no_longer_needs_it(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    published = timm.create_model("test_resnet", num_classes=5).state_dict()  # RGB stem and a classifier, as timm publishes
    weights = tmp_path / "test_resnet.safetensors"
    save_file(published, weights)
    model = SceneEventModel(SceneEventConfig(encoder="test_resnet", encoder_pretrained=str(weights), num_mel_bins=16))
    model.load_pretrained_encoder()
    loaded = model.encoder.state_dict()
    assert torch.equal(loaded["conv1.0.weight"], published["conv1.0.weight"].sum(dim=1, keepdim=True))
    assert all(torch.equal(value, published[key]) for key, value in loaded.items() if key != "conv1.0.weight")

    model.save_pretrained(tmp_path / "saved")
    weights.unlink()  # the saved weights are the model's; its config only records where the encoder started
    reloaded = SceneEventModel.from_pretrained(tmp_path / "saved")
    assert reloaded.config.encoder_pretrained == str(weights)
    assert all(torch.equal(value, loaded[key]) for key, value in reloaded.encoder.state_dict().items())


def test_encoder_weights_of_another_architecture_are_refused(tmp_path):
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet10t", num_classes=5).state_dict(), tmp_path / "resnet10t.safetensors")
    model = SceneEventModel(SceneEventConfig(encoder="test_resnet", encoder_pretrained=str(tmp_path / "resnet10t.safetensors"), num_mel_bins=16))
    with pytest.raises(ValueError, match="resnet10t.safetensors: these weights do not fit encoder 'test_resnet'"):
        model.load_pretrained_encoder()
