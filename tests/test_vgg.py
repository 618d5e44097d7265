"""Tests for srgan_cli.vgg: layer layout, weight loading, normalisation parsing."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import vgg as tv_vgg

from srgan_cli.vgg import (
    IMAGENET_NORMALIZATION,
    Normalization,
    VGGFeatures,
    find_local_vgg,
    layer_names,
    normalization_from_metadata,
)

# The free-text "input" metadata of the two shared weight files.
CAFFE_TEXT = "RGB in [0,1]; subtract mean [0.48502, 0.45796, 0.40760] per channel; no std division"
LPIPS_TEXT = (
    "LPIPS convention: RGB scaled to [-1,1], then (x - shift)/scale with shift "
    "[-0.030,-0.088,-0.188], scale [0.458,0.448,0.450]; taps after relu1_2, relu2_2"
)


def save_torchvision_features(path, cfg: str, metadata: dict[str, str]) -> torch.nn.Sequential:
    """Write torchvision's own (random) VGG ``features`` to ``path`` as fp16 safetensors.

    cfg: torchvision config letter ("D" = VGG16, "E" = VGG19). Returns the module, with its
    weights rounded to the saved fp16 values.
    """
    torch.manual_seed(0)
    features = tv_vgg.make_layers(tv_vgg.cfgs[cfg])
    with torch.no_grad():
        for p in features.parameters():
            p.copy_(p.half().float())
    state = {f"features.{k}": v.half() for k, v in features.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    return features


def test_layer_names_match_torchvision_indices():
    vgg19, vgg16 = layer_names("vgg19"), layer_names("vgg16")
    assert len(vgg19) == len(tv_vgg.make_layers(tv_vgg.cfgs["E"])) == 37
    assert len(vgg16) == len(tv_vgg.make_layers(tv_vgg.cfgs["D"])) == 31
    assert vgg19.index("relu5_4") == 35  # VGG54 = features[:36]
    assert vgg19.index("relu2_2") == 8  # VGG22 = features[:9]
    assert [vgg16.index(t) for t in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")] == [
        3,
        8,
        15,
        22,
        29,
    ]
    assert vgg16[4] == "pool1" and vgg19[-1] == "pool5"


def test_random_init_is_truncated_frozen_and_passes_gradients():
    model = VGGFeatures("vgg19", ["relu1_2", "relu5_4"], weights=None)
    assert len(model.features) == 36
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training

    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert set(out) == {"relu1_2", "relu5_4"}
    assert out["relu1_2"].shape == (2, 64, 32, 32)
    assert out["relu5_4"].shape == (2, 512, 2, 2)
    assert (out["relu5_4"] >= 0).all()
    out["relu5_4"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_tap_is_rejected():
    with pytest.raises(ValueError, match="relu5_4"):
        VGGFeatures("vgg16", ["relu5_4"], weights=None)  # VGG16 has no conv5_4
    with pytest.raises(ValueError, match="unknown VGG arch"):
        VGGFeatures("vgg11", ["relu1_1"], weights=None)


def test_safetensors_in_torchvision_layout_loads_and_matches_torchvision(tmp_path):
    path = tmp_path / "vgg19.safetensors"
    meta = {"mean": "[0.5, 0.4, 0.3]", "std": "[0.2, 0.25, 0.3]"}
    reference = save_torchvision_features(path, "E", meta)

    model = VGGFeatures("vgg19", ["relu3_4", "relu5_4"], weights=path)
    assert model.normalization == Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    expected_state = reference.state_dict()
    for key, value in model.features.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, expected_state[key])

    # Same result as torchvision's own module on normalised input.
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference[:36]((x - mean) / std)
        assert torch.allclose(model(x)["relu5_4"], expected, atol=1e-5, rtol=1e-4)


def test_missing_file_wrong_keys_and_shapes_raise_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        VGGFeatures("vgg19", ["relu5_4"], weights=tmp_path / "nope.safetensors")

    vgg16_path = tmp_path / "vgg16.safetensors"
    save_torchvision_features(vgg16_path, "D", {"mean": "[0.5, 0.5, 0.5]"})
    with pytest.raises(ValueError, match="missing"):  # VGG16 file read as VGG19
        VGGFeatures("vgg19", ["relu5_4"], weights=vgg16_path)

    bad = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)},
              str(bad), metadata={"mean": "[0.5, 0.5, 0.5]"})  # fmt: skip
    with pytest.raises(ValueError, match="shape"):
        VGGFeatures("vgg16", ["relu1_1"], weights=bad)


def test_normalization_from_metadata_text_and_json_forms():
    caffe = normalization_from_metadata({"input": CAFFE_TEXT})
    assert caffe == Normalization((0.48502, 0.45796, 0.40760), (1.0, 1.0, 1.0))

    # LPIPS' [-1, 1] shift/scale layer is exactly ImageNet mean/std for [0, 1] input.
    lpips = normalization_from_metadata({"input": LPIPS_TEXT})
    assert lpips.mean == pytest.approx(IMAGENET_NORMALIZATION.mean, abs=1e-12)
    assert lpips.std == pytest.approx(IMAGENET_NORMALIZATION.std, abs=1e-12)

    # Machine-readable keys win over the text.
    meta = {"mean": json.dumps([0.1, 0.2, 0.3]), "std": json.dumps([1, 2, 3]), "input": CAFFE_TEXT}
    assert normalization_from_metadata(meta) == Normalization((0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    assert normalization_from_metadata({"mean": "[0.1, 0.2, 0.3]"}).std == (1.0, 1.0, 1.0)


def test_undeterminable_normalization_tells_which_keys_to_add(tmp_path):
    with pytest.raises(ValueError, match='"mean" and "std"'):
        normalization_from_metadata({"input": "some weights"})
    path = tmp_path / "plain.safetensors"
    save_torchvision_features(path, "D", {})
    with pytest.raises(ValueError, match='"mean" and "std"'):
        VGGFeatures("vgg16", ["relu1_2"], weights=path)


def test_find_local_vgg_reads_env_vars(monkeypatch, tmp_path):
    monkeypatch.delenv("SRGAN_VGG19_WEIGHTS", raising=False)
    monkeypatch.delenv("SRGAN_LPIPS_WEIGHTS", raising=False)
    assert find_local_vgg("vgg19") is None and find_local_vgg("vgg16") is None
    monkeypatch.setenv("SRGAN_VGG19_WEIGHTS", str(tmp_path / "a.safetensors"))
    monkeypatch.setenv("SRGAN_LPIPS_WEIGHTS", str(tmp_path / "b.safetensors"))
    assert find_local_vgg("vgg19") == tmp_path / "a.safetensors"
    assert find_local_vgg("vgg16") == tmp_path / "b.safetensors"


def test_shared_weight_files_load(shared_dir):
    vgg19 = VGGFeatures(
        "vgg19", ["relu5_4"], weights=shared_dir / "pretrained/vgg19_imagenet_features.safetensors"
    )
    assert vgg19.normalization == Normalization((0.48502, 0.45796, 0.40760), (1.0, 1.0, 1.0))
    vgg16 = VGGFeatures(
        "vgg16", ["relu5_3"], weights=shared_dir / "pretrained/vgg16_lpips.safetensors"
    )
    assert vgg16.normalization.std == pytest.approx(IMAGENET_NORMALIZATION.std)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for model, tap in ((vgg19, "relu5_4"), (vgg16, "relu5_3")):
            feats = model(x)[tap]
            assert feats.shape == (1, 512, 2, 2) and torch.isfinite(feats).all()
            assert feats.abs().sum() > 0  # pretrained ReLU features are not all dead
