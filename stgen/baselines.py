"""HEST-Bench's linear probe: standardise -> PCA -> ridge, fitted on the training spots."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler


class RidgeProbe:
    """HEST's ridge probe from patch embeddings to (log1p) expression.

    ``StandardScaler`` -> ``PCA(P)`` with ``P = min(n_components, n_samples, n_features)`` -> ``Ridge(alpha =
    alpha_scale / (P * G), fit_intercept=False, solver="lsqr")``, all fitted on the training data only
    (``G`` = number of genes). The PCA output is centred, and as in HEST the target is **not** centred
    and no intercept is fitted: predictions then lack the per-gene training mean, which leaves the
    per-gene Pearson correlation of the HEST metric unchanged. Set ``center_target=True`` to fit on the
    centred target and add the training mean back (same correlations, predictions on the target's scale,
    e.g. for MSE).

    Args:
        n_components: PCA width before capping (HEST: 256).
        alpha_scale: numerator of the ridge penalty (HEST: 100).
        center_target: centre ``Y`` with its training mean and add it back in :meth:`predict`.
        max_iter: lsqr iterations.
        random_state: seed of the PCA's randomised solver and of the ridge solver.

    Shapes:
        fit: ``X [N, F]``, ``Y [N, G]`` (or ``[N]``); predict: ``X [M, F]`` -> ``[M, G]`` (``[M]`` for 1-d Y).
    """

    def __init__(
        self,
        n_components: int = 256,
        alpha_scale: float = 100.0,
        center_target: bool = False,
        max_iter: int = 1000,
        random_state: int = 0,
    ) -> None:
        if n_components < 1:
            raise ValueError(f"RidgeProbe: n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.alpha_scale = alpha_scale
        self.center_target = center_target
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray) -> RidgeProbe:
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"RidgeProbe.fit: X must be [N, F], got shape {X.shape}")
        self._y1d = Y.ndim == 1
        if self._y1d:
            Y = Y[:, None]
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"RidgeProbe.fit: Y must be [N, G] with N = {X.shape[0]}, got shape {Y.shape}")
        n, f = X.shape
        if n < 2:
            raise ValueError("RidgeProbe.fit: needs at least 2 training samples")
        self.n_components_ = int(min(self.n_components, n, f))
        self.scaler_ = StandardScaler().fit(X)
        self.pca_ = PCA(n_components=self.n_components_, random_state=self.random_state)
        Z = self.pca_.fit_transform(self.scaler_.transform(X))
        self.y_mean_ = Y.mean(axis=0) if self.center_target else np.zeros(Y.shape[1])
        self.alpha_ = self.alpha_scale / (self.n_components_ * Y.shape[1])
        self.ridge_ = Ridge(
            alpha=self.alpha_,
            fit_intercept=False,
            solver="lsqr",
            max_iter=self.max_iter,
            random_state=self.random_state,
        )
        self.ridge_.fit(Z, Y - self.y_mean_)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The standardised PCA projection ``[M, P]`` the ridge sees."""
        if not hasattr(self, "ridge_"):
            raise RuntimeError("RidgeProbe: call fit() first")
        X = np.asarray(X, dtype=np.float64)
        return self.pca_.transform(self.scaler_.transform(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = self.transform(X)
        pred = self.ridge_.predict(Z).reshape(len(Z), -1) + self.y_mean_
        return pred[:, 0] if self._y1d else pred


def ridge_fold_pearson(bundle: object, fold: object, target: str = "log1p") -> tuple[float, np.ndarray]:
    """The probe fitted on a fold's training and validation slides, scored on its test slides (pooled).

    Returns the pooled mean Pearson and the per-gene values, computed exactly as for the neural models,
    on the same ``target`` (see :mod:`stgen.preprocess`).
    """
    from stgen.data.graph import log1p_panel
    from stgen.metrics import evaluate

    slides, genes, key = bundle.slides, bundle.genes, bundle.feature_key  # type: ignore[attr-defined]
    fit_ids = list(fold.train) + list(fold.val)  # type: ignore[attr-defined]
    X = np.concatenate([np.asarray(slides[s].obsm[key]) for s in fit_ids])
    Y = np.concatenate([log1p_panel(slides[s], genes, target) for s in fit_ids])
    probe = RidgeProbe(center_target=True).fit(X, Y)
    test = list(fold.test)  # type: ignore[attr-defined]
    preds = [probe.predict(np.asarray(slides[s].obsm[key])) for s in test]
    trues = [log1p_panel(slides[s], genes, target) for s in test]
    ev = evaluate(preds, trues, test, genes)
    return ev.pearson, ev.per_gene


def oracle_fold_pearson(bundle: object, fold: object, layer: str = "oracle") -> float:
    """Pooled Pearson of a simulator oracle (``layers[layer]``, log1p space) on a fold's test slides.

    NaN when the slides have no such layer (real data).
    """
    from stgen.data.graph import log1p_panel
    from stgen.metrics import evaluate

    slides, genes = bundle.slides, bundle.genes  # type: ignore[attr-defined]
    test = list(fold.test)  # type: ignore[attr-defined]
    if not all(layer in slides[s].layers for s in test):
        return float("nan")
    preds = [np.asarray(slides[s][:, genes].layers[layer]) for s in test]
    trues = [log1p_panel(slides[s], genes) for s in test]
    return evaluate(preds, trues, test, genes).pearson
