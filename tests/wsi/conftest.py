"""Small real slides for the whole-slide tests: pyramidal TIFFs written with tifffile from a crop of a
shared her2st image, and a synthetic slide with glass, a hole and pen marks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

HER2ST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "her2st"
if not HER2ST.is_dir():  # CI clones the repository next to a copy of shared/
    HER2ST = Path("/work/shared/data/her2st")
#: her2st full-resolution images: about 0.69 um/px (290 px per 200 um array step)
HER2ST_MPP = 0.69
GENES = ["ERBB2", "GATA3", "KRT19", "CD74"]


@pytest.fixture(scope="session")
def her2st_root() -> Path:
    """The shared her2st subset."""
    return HER2ST


@pytest.fixture(scope="session")
def her2st_crop() -> tuple[np.ndarray, tuple[int, int]]:
    """A 1536 x 1536 px crop of section C2 (about 1 mm) with tissue, and its top-left corner."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    origin = (3500, 3500)
    with Image.open(HER2ST / "images" / "C2.jpg") as im:
        crop = np.asarray(im.crop((*origin, origin[0] + 1536, origin[1] + 1536)).convert("RGB"))
    return crop, origin


@pytest.fixture(scope="session")
def handcrafted_module():
    """A small untrained model over the handcrafted backend whose checkpoint contract says: handcrafted
    features, 112 um / 64 px patches (small, for speed), a 100 um hexagonal lattice (Visium-like)."""
    import torch

    from stgen.data.spec import DataSpec
    from stgen.features.handcrafted import HandcraftedFeatures
    from stgen.lit import STGenLightning

    torch.manual_seed(0)
    spec = DataSpec(features=HandcraftedFeatures(device="cpu").feature_spec(), patch_um=112.0, patch_px=64,
                    spot_spacing_um=100.0, layout="hex")
    module = STGenLightning({"encoder": {"name": "mlp", "hidden_dim": 16, "num_layers": 1},
                             "generator": {"name": "regression"}, "prior": {"name": "zero"}},
                            in_dim=47, genes=GENES, data_spec=spec.to_dict())
    return module.eval()


@pytest.fixture(scope="session")
def handcrafted_checkpoint(handcrafted_module, tmp_path_factory) -> Path:
    """``handcrafted_module`` saved as a Lightning checkpoint."""
    return save_checkpoint(handcrafted_module, tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def save_checkpoint(module, path: Path) -> Path:
    """Write a Lightning checkpoint of ``module`` (as training would)."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path
