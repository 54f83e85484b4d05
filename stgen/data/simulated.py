"""The ``simulated`` data source: the embedded default of ``stgen run``."""

from __future__ import annotations

from stgen.data.simulate import SimulationConfig, simulate
from stgen.data.slide import slide_id
from stgen.data.source import DATASETS, DataBundle, DataSource, split_by_group
from stgen.data.spec import DataSpec, lattice_geometry


@DATASETS.register("simulated")
class SimulatedData(DataSource):
    """Visium-like simulated slides with a known oracle (see :mod:`stgen.data.simulate`).

    Args:
        n_slides: slides.
        n_patients: patients (splits hold out whole patients).
        n_spots: spots per slide (approximate).
        n_genes: genes (all form the panel).
        feature_dim: patch-embedding width F.
        interaction: neighbourhood-interaction strength.
        noise: feature noise.
        slide_effect: per-slide shift of the embeddings (stain/scanner batch effect; 0: none).
        feature_scale_spread: log-normal sigma of the embeddings' per-column scales (0: equal scales).
        sim_seed: simulator seed (independent of the training seed).
        n_test: patients held out for testing.
        n_val: patients held out for validation.
        feature_key: ``obsm`` key of the embeddings.
    """

    def __init__(self, n_slides: int = 8, n_patients: int = 4, n_spots: int = 400, n_genes: int = 50,
                 feature_dim: int = 64, interaction: float = 1.0, noise: float = 0.5, slide_effect: float = 0.3,
                 feature_scale_spread: float = 1.0, sim_seed: int = 0, n_test: int = 1, n_val: int = 1,
                 feature_key: str = "features") -> None:
        super().__init__(feature_key=feature_key)
        self.sim = SimulationConfig(n_slides=n_slides, n_patients=n_patients, n_spots=n_spots, n_genes=n_genes,
                                    feature_dim=feature_dim, interaction=interaction, noise=noise,
                                    slide_effect=slide_effect, feature_scale_spread=feature_scale_spread,
                                    seed=sim_seed)
        self.n_test = n_test
        self.n_val = n_val

    def read(self, features: dict | None) -> DataBundle:
        slides = simulate(self.sim)
        # simulated embeddings have no image or backend; the lattice is in simulated pixels of 1 um
        spacing, layout = lattice_geometry(slides[0].obsm["spatial"], 1.0)
        fold = split_by_group(slides, n_test=self.n_test, n_val=self.n_val, seed=self.sim.seed)
        return DataBundle(
            slides={slide_id(a): a for a in slides},
            genes=list(slides[0].var_names),
            folds=[fold],
            feature_key=self.feature_key,
            info={"source": "simulated", **self.sim.__dict__},
            spec=DataSpec(features=None, spot_spacing_um=spacing, layout=layout),
        )
