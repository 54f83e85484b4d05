"""A Visium-like slide simulator with a known oracle: the embedded default dataset of ``stgen run``.

Generative story per slide:

1. Spots on a hexagonal grid (``array_row``/``array_col``; 100 µm centre-to-centre) cut to an
   irregular tissue outline, then placed in full-resolution pixels by a random rotation, scale and
   translation (so coordinates are not axis-aligned, as on real scans).
2. ``n_cell_types`` smooth composition fields (random Gaussian bumps; softmax) plus a per-spot
   Dirichlet jitter: tissue domains that vary smoothly, with spot-to-spot variation on top.
3. Gene programmes: per-gene baseline plus per-cell-type log-fold changes; a spot's mean is the
   composition-weighted mixture.
4. Neighbourhood interaction: a subset of genes responds to how the mean composition of the spot's
   two rings of neighbours differs from its own (interfaces between domains), scaled by
   ``interaction``. Only a model that looks at neighbours can explain that part.
5. Library size: a part explained by the spot's composition (cell types differ in cell density,
   which H&E shows), plus per-slide and per-spot log-normal factors no image shows.
6. Counts: zero-inflated negative binomial around the mean.
7. Patch embeddings: a noisy nonlinear function of the spot's own composition only, as a pretrained
   image encoder would give: columns on very different scales (``feature_scale_spread``, so unscaled
   inputs matter as with real embeddings) and a per-slide shift of every column (stain and scanner
   differences, ``slide_effect``), on top of per-spot noise.

Two oracles (Monte-Carlo means of ``log1p(counts)``):

* ``layers["oracle"]``: ``E[log1p(counts) | composition, neighbourhood]``, averaged over everything an
  image cannot show (the patient's expression offsets, the slide's and the spot's library-size
  factors, count noise). This is the ceiling an image model can attain (with perfect features); runs
  report the fraction of its Pearson a model reaches.
* ``layers["oracle_depth"]``: also knows the patient offsets and each spot's library size (the
  simulator's truth): not attainable from images, kept to show how much depth alone explains.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree

from stgen.data.slide import make_slide

ORACLE_LAYER = "oracle"
#: the oracle that also knows library sizes and patient offsets (not attainable from images)
DEPTH_ORACLE_LAYER = "oracle_depth"
#: typical spread of a neighbourhood's cell-type fraction; scales the interaction term
NEIGHBOURHOOD_SCALE = 0.1


@dataclass
class SimulationConfig:
    """Knobs of the simulator.

    Args:
        n_slides: number of slides.
        n_patients: patients; slides are assigned round-robin and share a patient effect.
        n_spots: approximate spots per slide (the tissue outline varies it by about +-20%).
        n_genes: genes per slide.
        feature_dim: width F of the patch embeddings.
        n_cell_types: cell types mixed in each spot.
        interaction: strength of the neighbourhood-interaction term (0 switches it off).
        interaction_genes: fraction of genes that respond to the neighbourhood.
        noise: standard deviation of the feature noise (relative to the signal's scale).
        jitter: concentration of the per-spot Dirichlet jitter (smaller = more spot-level variation).
        dispersion: NB inverse dispersion theta.
        slide_effect: per-slide shift of the embeddings (stain/scanner batch effect), relative to the
            signal's scale (0 switches it off).
        feature_scale_spread: log-normal sigma of the per-column scales of the embeddings (0: equal scales).
        density_effect: sd of the per-cell-type log cell density that feeds the library size.
        library_slide_sd: sd of the per-slide log library factor.
        library_spot_sd: sd of the per-spot log library factor.
        patient_sd: sd of the per-patient, per-gene log expression offsets.
        seed: random seed.
    """

    n_slides: int = 10
    n_patients: int = 5
    n_spots: int = 600
    n_genes: int = 50
    feature_dim: int = 64
    n_cell_types: int = 6
    interaction: float = 1.0
    interaction_genes: float = 0.4
    noise: float = 0.5
    jitter: float = 1.5
    dispersion: float = 4.0
    slide_effect: float = 0.3
    feature_scale_spread: float = 1.0
    density_effect: float = 0.3
    library_slide_sd: float = 0.2
    library_spot_sd: float = 0.25
    patient_sd: float = 0.15
    seed: int = 0


def hex_grid(n_spots: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visium-like hexagonal grid cut to an irregular outline.

    Returns ``(array_row, array_col, xy_um)``; in Visium numbering, ``array_col`` steps by 2 along a
    row and odd rows are offset by one.
    """
    side = int(np.ceil(np.sqrt(n_spots * 2.2)))
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    cols = 2 * cols + (rows % 2)
    xy = np.stack([cols * 50.0, rows * 50.0 * np.sqrt(3.0)], axis=1)  # 100 µm between neighbours
    centre = xy.mean(0)
    rel = xy - centre
    angle = np.arctan2(rel[:, 1], rel[:, 0])
    # irregular outline: radius modulated by a few random harmonics
    harmonics = sum(
        rng.normal(0, 0.08) * np.cos(h * angle + rng.uniform(0, 2 * np.pi)) for h in range(2, 5)
    )
    radius = np.linalg.norm(rel, axis=1)
    target_r = np.sqrt(n_spots * 100.0 * 50.0 * np.sqrt(3.0) / np.pi) * (1.0 + harmonics)
    keep = radius <= target_r
    return rows[keep], cols[keep], xy[keep]


def _smooth_fields(xy: np.ndarray, n_fields: int, rng: np.random.Generator, n_bumps: int = 6) -> np.ndarray:
    """Sum of random Gaussian bumps per field: smooth spatial signals ``[N, n_fields]``."""
    lo, hi = xy.min(0), xy.max(0)
    span = float(np.max(hi - lo))
    out = np.zeros((len(xy), n_fields))
    for f in range(n_fields):
        for _ in range(n_bumps):
            c = rng.uniform(lo, hi)
            width = rng.uniform(0.12, 0.35) * span
            out[:, f] += rng.normal(0, 1.5) * np.exp(-np.sum((xy - c) ** 2, axis=1) / (2 * width**2))
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class _Shared:
    """Parameters shared by all slides (the biology)."""

    baseline: np.ndarray  # [G]
    programmes: np.ndarray  # [T, G] log-fold changes per cell type
    response: np.ndarray  # [T, G] neighbourhood response (zero for non-responding genes)
    zero_inflation: np.ndarray  # [G]
    feat_a: np.ndarray  # [T, H]
    feat_b: np.ndarray  # [H, F]
    feat_scale: np.ndarray  # [F] per-column scale of the embeddings
    density: np.ndarray  # [T] log cell density per cell type (drives library size)
    genes: list[str]


def _shared(cfg: SimulationConfig, rng: np.random.Generator) -> _Shared:
    T, G = cfg.n_cell_types, cfg.n_genes
    baseline = rng.normal(2.0, 0.8, G)
    programmes = rng.normal(0, 1.0, (T, G)) * (rng.random((T, G)) < 0.5)
    responding = rng.random(G) < cfg.interaction_genes
    response = rng.normal(0, 1.0, (T, G)) * responding[None, :]
    response -= response.mean(axis=0, keepdims=True)  # respond to composition contrasts
    hidden = 32
    return _Shared(
        baseline=baseline,
        programmes=programmes,
        response=response,
        zero_inflation=rng.uniform(0.02, 0.25, G),
        feat_a=rng.normal(0, 2.0, (T, hidden)),
        feat_b=rng.normal(0, 1.0 / np.sqrt(hidden), (hidden, cfg.feature_dim)),
        feat_scale=np.exp(rng.normal(0, cfg.feature_scale_spread, cfg.feature_dim)),
        density=rng.normal(0, cfg.density_effect, T),
        genes=[f"gene{g:03d}" for g in range(G)],
    )


def neighbourhood_mean(xy: np.ndarray, values: np.ndarray, radius: float) -> np.ndarray:
    """Mean of ``values`` over the other spots within ``radius`` (the spot itself excluded)."""
    tree = cKDTree(xy)
    pairs = tree.query_pairs(radius, output_type="ndarray")
    out = np.zeros_like(values)
    count = np.zeros(len(xy))
    np.add.at(out, pairs[:, 0], values[pairs[:, 1]])
    np.add.at(out, pairs[:, 1], values[pairs[:, 0]])
    np.add.at(count, pairs[:, 0], 1)
    np.add.at(count, pairs[:, 1], 1)
    return out / np.maximum(count, 1)[:, None]


def _zinb_counts(mu: np.ndarray, theta: float, pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lam = rng.gamma(theta, mu / theta)
    counts = rng.poisson(lam)
    return np.where(rng.random(mu.shape) < pi[None, :], 0, counts)


def simulate_slide(
    cfg: SimulationConfig, shared: _Shared, slide_index: int, rng: np.random.Generator, oracle_draws: int = 48
) -> ad.AnnData:
    rows, cols, xy_um = hex_grid(cfg.n_spots, rng)
    n = len(xy_um)
    T = cfg.n_cell_types
    smooth = _softmax(3.0 * _smooth_fields(xy_um, T, rng))  # domains dominated by one or two types
    comp = np.stack([rng.dirichlet(cfg.jitter * T * s + 0.05) for s in smooth])  # [N, T]
    neigh = neighbourhood_mean(xy_um, comp, radius=210.0)  # two rings of the hex grid
    mix = np.log(comp @ np.exp(shared.programmes) + 1e-8)  # [N, G]
    patient = slide_index % cfg.n_patients
    prng = np.random.default_rng(cfg.seed * 1000 + patient)
    patient_effect = prng.normal(0, cfg.patient_sd, cfg.n_genes)
    visible_lib = comp @ shared.density  # cell density: what H&E shows of the library size
    slide_lib, spot_lib = rng.normal(0, cfg.library_slide_sd), rng.normal(0, cfg.library_spot_sd, n)
    # response to how the neighbourhood differs from the spot itself (interfaces between domains), on a
    # fixed scale shared by all slides, so ``interaction = 1`` is on the scale of the cell-type programmes
    neigh_z = (neigh - comp) / NEIGHBOURHOOD_SCALE
    log_mu_visible = shared.baseline + mix + cfg.interaction * (neigh_z @ shared.response) / np.sqrt(T)
    log_mu_visible = log_mu_visible + visible_lib[:, None]

    def draw(patient_off: np.ndarray, log_lib: np.ndarray) -> np.ndarray:
        mu = np.exp(np.clip(log_mu_visible + patient_off + log_lib[:, None], -8, 8))
        return _zinb_counts(mu, cfg.dispersion, shared.zero_inflation, rng)

    counts = draw(patient_effect, slide_lib + spot_lib)
    oracle_depth = np.mean([np.log1p(draw(patient_effect, slide_lib + spot_lib)) for _ in range(oracle_draws)],
                           axis=0)
    oracle = np.mean([np.log1p(draw(rng.normal(0, cfg.patient_sd, cfg.n_genes),
                                    rng.normal(0, cfg.library_slide_sd) + rng.normal(0, cfg.library_spot_sd, n)))
                      for _ in range(oracle_draws)], axis=0)
    clean = np.tanh(comp @ shared.feat_a) @ shared.feat_b
    scale = clean.std()
    feats = clean + cfg.noise * scale * rng.normal(size=clean.shape)
    feats = (feats + cfg.slide_effect * scale * rng.normal(size=cfg.feature_dim)) * shared.feat_scale
    # place the grid in pixels: random rotation, scale (~0.27 µm/px ... 0.5 µm/px) and offset
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    px_per_um = 1.0 / rng.uniform(0.27, 0.5)
    xy_px = (xy_um - xy_um.mean(0)) @ rot.T * px_per_um + rng.uniform(5000, 15000, 2)
    sid = f"sim{slide_index:02d}"
    adata = make_slide(
        counts.astype(np.float32),
        xy_px,
        slide=sid,
        genes=shared.genes,
        barcodes=[f"{sid}_{r}x{c}" for r, c in zip(rows, cols, strict=True)],
        features=feats.astype(np.float32),
        patient=f"P{patient}",
    )
    adata.obs["array_row"] = rows
    adata.obs["array_col"] = cols
    adata.obsm["composition"] = comp.astype(np.float32)
    adata.obsm["neighbourhood_composition"] = neigh.astype(np.float32)
    adata.layers[ORACLE_LAYER] = oracle.astype(np.float32)
    adata.layers[DEPTH_ORACLE_LAYER] = oracle_depth.astype(np.float32)
    adata.uns["stgen"]["simulated"] = {"interaction": cfg.interaction, "noise": cfg.noise, "seed": cfg.seed,
                                       "slide_effect": cfg.slide_effect,
                                       "feature_scale_spread": cfg.feature_scale_spread}
    adata.uns["stgen"]["microns_per_pixel"] = float(1.0 / px_per_um)
    return adata


def simulate(cfg: SimulationConfig | None = None, **overrides: object) -> list[ad.AnnData]:
    """Simulate ``cfg.n_slides`` Slide AnnData objects (see the module docstring).

    Returns slides with raw counts in ``X``, pixel coordinates in ``obsm['spatial']``, patch
    embeddings in ``obsm['features']``, the oracle in ``layers['oracle']``, and slide/patient ids in
    ``uns['stgen']``.
    """
    cfg = cfg or SimulationConfig()
    if overrides:
        cfg = SimulationConfig(**{**cfg.__dict__, **overrides})
    if cfg.n_slides < 1 or cfg.n_patients < 1 or cfg.n_spots < 10 or cfg.n_genes < 1:
        raise ValueError(f"simulator: n_slides, n_patients >= 1, n_spots >= 10, n_genes >= 1; got {cfg}")
    rng = np.random.default_rng(cfg.seed)
    shared = _shared(cfg, rng)
    return [simulate_slide(cfg, shared, i, np.random.default_rng([cfg.seed, i])) for i in range(cfg.n_slides)]
