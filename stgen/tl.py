"""Tools (scanpy/squidpy style): functions that take an AnnData and write results under ``key_added``.

``stgen.tl.predict(adata, model, key_added="stgen")`` adds

- ``adata.obsm["stgen_mean"]``: ``pandas.DataFrame`` ``[n_obs, G]`` of predicted log1p expression, one
  column per gene of the model's panel (the panel need not be among ``adata.var_names``);
- ``adata.obsm["stgen_std"]``: the predictive spread, when the model has one (more than one sample drawn,
  or a Gaussian head: ``generator.likelihood=gaussian``);
- ``adata.uns["stgen_params"]``: genes, sampling settings, the encoder's graph ``k`` and the model spec
  (``uns["stgen"]`` itself is the slide's own metadata: slide id, patient).

Nothing the caller had is overwritten: existing keys are an error unless ``overwrite=True``, and the
slide graph is built on a private copy (the caller's ``obsp`` is never touched).
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from stgen.data.slide import FEATURE_KEY, SPATIAL_KEY, UNS_KEY, SlideError, slide_id
from stgen.io import h5ad_safe


def result_keys(key_added: str) -> dict[str, str]:
    """Where :func:`predict` writes: ``{"mean": "<key>_mean", "std": "<key>_std", "uns": "<key>_params"}``."""
    return {"mean": f"{key_added}_mean", "std": f"{key_added}_std", "uns": f"{key_added}_params"}


def predict(adata: ad.AnnData, model: Any, *, key_added: str = "stgen", n_samples: int | None = None,
            steps: int | None = None, seed: int = 0, feature_key: str = FEATURE_KEY, chunk_size: int = 50_000,
            overwrite: bool = False, copy: bool = False) -> ad.AnnData | None:
    """Predict the model's gene panel for every spot of ``adata``.

    Args:
        adata: one slide: ``obsm["spatial"]`` (full-resolution pixels) and ``obsm[feature_key]`` (patch
            embeddings from the training data's feature backend); expression is not needed.
        model: a trained model from :func:`stgen.load`.
        key_added: prefix of the keys written (see the module docstring).
        n_samples: samples per spot (default: the checkpoint's ``generator.n_samples``).
        steps: sampling steps (default: the checkpoint's ``generator.steps``).
        seed: seed of the prior samples.
        feature_key: ``obsm`` key of the embeddings.
        chunk_size: spots per inference chunk (bounds memory; the result does not depend on it).
        overwrite: replace results already stored under ``key_added``.
        copy: return a modified copy instead of writing into ``adata``.

    Returns:
        the modified copy when ``copy=True``, else None.

    Raises:
        KeyError: results exist under ``key_added`` and ``overwrite`` is False.
        stgen.data.slide.SlideError: the slide lacks coordinates or embeddings, or their width differs
            from the model's.
    """
    from stgen.predict import predict_slide, target_info

    keys = result_keys(key_added)
    taken = [f"obsm[{keys[k]!r}]" for k in ("mean", "std") if keys[k] in adata.obsm]
    taken += [f"uns[{keys['uns']!r}]"] if keys["uns"] in adata.uns else []
    if taken and not overwrite:
        raise KeyError(f"{', '.join(taken)} already exist(s) in the AnnData; choose another key_added or pass "
                       "overwrite=True")
    name = slide_id(adata, default="the slide")
    for key in (SPATIAL_KEY, feature_key):
        if key not in adata.obsm:
            raise SlideError(f"{name}: no obsm[{key!r}]; prediction needs spot coordinates (obsm['spatial']) and "
                             f"patch embeddings (obsm[{feature_key!r}], e.g. from `stgen extract`)")
    # a private slide: building its graph writes obsp/uns, which must not touch the caller's AnnData
    private = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()),
                         obsm={SPATIAL_KEY: np.asarray(adata.obsm[SPATIAL_KEY]),
                               feature_key: np.asarray(adata.obsm[feature_key])})
    private.uns[UNS_KEY] = {"slide_id": slide_id(adata)}
    pred = predict_slide(model, private, feature_key=feature_key, n_samples=n_samples, steps=steps, seed=seed,
                         chunk_size=chunk_size)
    target = adata.copy() if copy else adata
    if overwrite:
        target.obsm.pop(keys["std"], None)
    index = target.obs_names
    target.obsm[keys["mean"]] = pd.DataFrame(pred.mean.astype(np.float32), index=index, columns=pred.genes)
    if pred.std is not None:
        target.obsm[keys["std"]] = pd.DataFrame(pred.std.astype(np.float32), index=index, columns=pred.genes)
    generator = model.model.generator
    target.uns[keys["uns"]] = {
        "genes": list(pred.genes),
        **target_info(model),
        "n_samples": int(pred.n_samples),
        "steps": int(steps if steps is not None else generator.steps),
        "seed": int(seed),
        "graph_k": -1 if model.model.encoder.graph_k is None else int(model.model.encoder.graph_k),
        "model_spec": h5ad_safe(dict(model.hparams.model_spec)),
    }
    return target if copy else None

