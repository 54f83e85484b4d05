"""Contract checks for components: stgen runs them on every registered component, and so can plugins.

Each ``check_*`` function raises ``AssertionError`` with a message naming the component and the broken
rule. Use them from pytest::

    from stgen.testing import check_encoder
    def test_my_encoder():
        check_encoder(MyEncoder)
"""

from __future__ import annotations

import copy
import io
import math
from typing import Any

import torch
from torch_geometric.data import Batch, Data

from stgen.encoders.base import Encoder
from stgen.generators.base import Generator, SampleOutput
from stgen.priors.base import Prior


def toy_batch(in_dim: int = 12, n_genes: int = 5, sizes: tuple[int, ...] = (30, 22), k: int = 6,
              seed: int = 0) -> Batch:
    """A batch of random slides in general position (PyG ``Batch``; kNN graphs, log1p-like targets)."""
    from stgen.data.graph import knn_edges

    g = torch.Generator().manual_seed(seed)
    graphs = []
    for i, n in enumerate(sizes):
        pos = torch.rand(n, 2, generator=g) * 1000.0
        x = torch.randn(n, in_dim, generator=g)
        y = torch.log1p(torch.poisson(torch.rand(n, n_genes, generator=g) * 5, generator=g))
        d = Data(x=x, pos=pos, y=y, edge_index=knn_edges(pos, k))
        d.slide_id = f"toy{i}"
        graphs.append(d)
    return Batch.from_data_list(graphs)


def _name(obj: Any) -> str:
    return getattr(obj, "__name__", type(obj).__name__)


def _roundtrip(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def check_encoder(cls: type[Encoder], in_dim: int = 12, n_genes: int = 5, **params: Any) -> None:
    """Shapes, finite output, backward, state_dict round trip, no cross-slide leakage, declared invariance."""
    name = _name(cls)
    assert issubclass(cls, Encoder), f"{name} must subclass stgen.encoders.base.Encoder"
    torch.manual_seed(0)
    enc = cls(in_dim=in_dim, out_dim=n_genes, **params)
    batch = toy_batch(in_dim, n_genes)
    n, b = batch.num_nodes, batch.num_graphs
    y = torch.randn(n, n_genes)
    t = torch.rand(b)
    enc.train()
    out = enc(batch, y, t)
    assert out.shape == (n, n_genes), f"{name}: output {tuple(out.shape)} != ({n}, {n_genes})"
    assert torch.isfinite(out).all(), f"{name}: non-finite output"
    out.pow(2).mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads, f"{name}: has no trainable parameters"
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: backward reached no parameter"
    assert all(g is None or torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradients"

    enc.eval()
    with torch.no_grad():
        ref = enc(batch, y, t)
        again = enc(batch, y, t)
        assert torch.allclose(ref, again), f"{name}: eval-mode output is not deterministic"
        clone = cls(in_dim=in_dim, out_dim=n_genes, **params)
        clone.load_state_dict(_roundtrip(enc))
        clone.eval()
        assert torch.allclose(clone(batch, y, t), ref, atol=1e-6), f"{name}: state_dict round trip changes output"
        # slides in a batch must not see each other
        first = Batch.from_data_list([batch.get_example(0)])
        n0 = first.num_nodes
        alone = enc(first, y[:n0], t[:1])
        assert torch.allclose(alone, ref[:n0], atol=1e-4), f"{name}: output of a slide depends on other slides"
        if enc.uses_state:
            moved = enc(batch, y + 1.0, t)
            assert not torch.allclose(moved, ref), f"{name}: declares uses_state but ignores y"
        if getattr(enc, "invariant_to_rigid_motion", False):
            check_rigid_invariance(enc, batch, y, t)


def check_rigid_invariance(enc: Encoder, batch: Batch, y: torch.Tensor, t: torch.Tensor, atol: float = 1e-4) -> None:
    """Rotating, reflecting and translating every slide leaves the (eval-mode) output unchanged."""
    angle = 0.7
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    refl = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    moved = copy.copy(batch)
    moved.pos = batch.pos @ (refl @ rot).T + torch.tensor([123.0, -45.0])
    with torch.no_grad():
        a = enc(batch, y, t)
        b = enc(moved, y, t)
    err = (a - b).abs().max().item()
    assert err < atol, f"{_name(type(enc))}: declared E(2)-invariant but a rigid motion moves the output by {err:.2e}"


def check_prior(cls: type[Prior], n_genes: int = 5, **params: Any) -> None:
    """Sample shape, finiteness, seeded reproducibility, fit on counts, state_dict round trip."""
    name = _name(cls)
    assert issubclass(cls, Prior), f"{name} must subclass stgen.priors.base.Prior"
    prior = cls(n_genes=n_genes, **params)
    s = prior.sample((40, n_genes), generator=torch.Generator().manual_seed(1))
    assert s.shape == (40, n_genes), f"{name}: sample shape {tuple(s.shape)} != (40, {n_genes})"
    assert torch.isfinite(s).all(), f"{name}: non-finite samples"
    s2 = prior.sample((40, n_genes), generator=torch.Generator().manual_seed(1))
    assert torch.equal(s, s2), f"{name}: samples are not reproducible with a seeded generator"
    try:
        prior.sample((40, n_genes + 1))
    except ValueError:
        pass
    else:
        raise AssertionError(f"{name}: accepted a shape whose gene count differs from n_genes")
    counts = torch.poisson(torch.full((200, n_genes), 3.0, dtype=torch.float32), torch.Generator().manual_seed(2))
    prior.fit(counts)
    after = prior.sample((40, n_genes), generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(after).all(), f"{name}: non-finite samples after fit"
    clone = cls(n_genes=n_genes, **params)
    clone.load_state_dict(_roundtrip(prior))
    again = clone.sample((40, n_genes), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(after, again), f"{name}: state_dict round trip changes the samples"


def check_generator(cls: type[Generator], in_dim: int = 12, n_genes: int = 5, **params: Any) -> None:
    """Loss is a finite scalar with gradients; samples have the right shape, are seeded, and carry a spread."""
    from stgen.encoders.mlp import MLPEncoder
    from stgen.priors.gaussian import GaussianPrior

    name = _name(cls)
    assert issubclass(cls, Generator), f"{name} must subclass stgen.generators.base.Generator"
    torch.manual_seed(0)
    gen = cls(**params)
    out_dim = gen.encoder_out_dim(n_genes)
    assert isinstance(out_dim, int) and out_dim >= n_genes, f"{name}: encoder_out_dim({n_genes}) = {out_dim!r}"
    enc = MLPEncoder(in_dim=in_dim, out_dim=out_dim, hidden_dim=16, num_layers=1)
    prior = GaussianPrior(n_genes)
    batch = toy_batch(in_dim, n_genes)
    out = gen.loss(enc, batch, prior)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss), f"{name}: loss must be a finite scalar"
    out.loss.backward()
    assert any(p.grad is not None for p in enc.parameters()), f"{name}: loss does not reach the encoder"
    enc.eval()
    with torch.no_grad():
        s1 = gen.sample(enc, batch, prior, seed=3)
        s2 = gen.sample(enc, batch, prior, seed=3)
        assert s1.shape == (batch.num_nodes, n_genes), f"{name}: sample shape {tuple(s1.shape)}"
        assert torch.isfinite(s1).all(), f"{name}: non-finite samples"
        assert torch.allclose(s1, s2), f"{name}: sampling with the same seed is not reproducible"
        pred = gen.predict(enc, batch, prior, seed=0, n_samples=3)
        assert isinstance(pred, SampleOutput), f"{name}: predict must return a SampleOutput"
        assert pred.mean.shape == s1.shape and pred.std is not None and pred.std.shape == s1.shape
        assert (pred.std >= 0).all(), f"{name}: negative spread"
        one = gen.predict(enc, batch, prior, seed=0, n_samples=1)
        assert one.mean.shape == s1.shape, f"{name}: predict with one sample has shape {tuple(one.mean.shape)}"
        assert one.std is None or (one.std.shape == s1.shape and (one.std >= 0).all()), f"{name}: bad spread"


def check_features(extractor: Any, size: int = 64) -> None:
    """A built feature backend: ``[B, H, W, 3]`` uint8 in, ``[B, dim]`` finite float32 out, batch-size
    independent and deterministic; bad input rejected; constructor parameters readable for the cache key."""
    import numpy as np

    from stgen.features.base import FeatureExtractor

    name = _name(type(extractor))
    assert isinstance(extractor, FeatureExtractor), f"{name} must subclass stgen.features.base.FeatureExtractor"
    assert isinstance(extractor.dim, int) and extractor.dim > 0, f"{name}: dim must be a positive int"
    imgs = np.random.default_rng(0).integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    out = extractor(imgs)
    assert out.dtype == torch.float32 and out.shape == (3, extractor.dim), f"{name}: output {tuple(out.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite embeddings"
    assert torch.allclose(out, extractor(torch.from_numpy(imgs))), f"{name}: numpy and torch input differ"
    single = torch.cat([extractor(imgs[i:i + 1]) for i in range(3)])
    assert torch.allclose(out, single, rtol=1e-4, atol=1e-4), f"{name}: embeddings depend on the batch"
    assert extractor(imgs[:0]).shape == (0, extractor.dim), f"{name}: empty batch"
    for bad in (imgs.astype(np.float32), imgs[0], imgs.transpose(0, 3, 1, 2)):
        try:
            extractor(bad)
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"{name}: accepted input of dtype {bad.dtype} and shape {bad.shape}")
    params = extractor.get_params()
    assert set(params) == {p.name for p in type(extractor).params()}, (
        f"{name}: store every constructor parameter under its own name (the embedding cache key uses them)"
    )
