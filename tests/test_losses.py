"""Every loss against a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from gmdf_cli.model import (
    domain_alignment_loss,
    domain_class_contrastive_loss,
    frechet_distance,
    mim_loss,
    random_patch_mask,
)


def _random_spd(n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(n, n))
    return a @ a.T + 0.1 * np.eye(n)


def _scipy_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("n", [2, 8, 32])
def test_frechet_matches_scipy_sqrtm_on_random_spd_matrices(n: int) -> None:
    rng = np.random.default_rng(n)
    mu1, mu2 = rng.normal(size=n), rng.normal(size=n)
    s1, s2 = _random_spd(n, rng), _random_spd(n, rng)
    expected = _scipy_frechet(mu1, s1, mu2, s2)
    got = frechet_distance(*(torch.tensor(a, dtype=torch.float64) for a in (mu1, s1, mu2, s2)), eps=0.0)
    assert got.item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_frechet_of_identical_distributions_is_zero() -> None:
    rng = np.random.default_rng(0)
    s = torch.tensor(_random_spd(5, rng))
    mu = torch.tensor(rng.normal(size=5))
    assert frechet_distance(mu, s, mu, s).item() == pytest.approx(0.0, abs=1e-8)


def test_alignment_loss_gradient_is_finite_with_rank_deficient_batches() -> None:
    torch.manual_seed(0)
    source = torch.randn(8, 64, requires_grad=True)  # 8 samples in 64 dims: covariance of rank 7
    target = (torch.randn(6, 64) + 0.5).requires_grad_()
    loss = domain_alignment_loss(source, target)
    loss.backward()
    assert loss.item() > 0
    assert torch.isfinite(source.grad).all() and torch.isfinite(target.grad).all()
    with torch.no_grad():  # moving the target towards the source lowers the loss
        closer = domain_alignment_loss(source, target - 0.5)
    assert closer < loss


def test_contrastive_loss_hand_computed() -> None:
    # One image of source domain 1, label fake; prompts (wildcard, d1, d2) x (real, fake).
    logits = torch.tensor([[[5.0, 5.0], [1.0, 2.0], [0.0, 3.0]]])
    loss = domain_class_contrastive_loss(logits, torch.tensor([1]), torch.tensor([1]))
    # the wildcard row is excluded for a known domain: softmax over {1, 2, 0, 3}, target 2
    expected = -math.log(math.exp(2) / (math.exp(1) + math.exp(2) + math.exp(0) + math.exp(3)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # seen as an unseen domain (wildcard, e.g. meta-test), label real: all six prompts compete, target 5
    loss0 = domain_class_contrastive_loss(logits, torch.tensor([0]), torch.tensor([0]))
    denominator = sum(math.exp(v) for v in (5, 5, 1, 2, 0, 3))
    assert loss0.item() == pytest.approx(-math.log(math.exp(5) / denominator), rel=1e-6)


def test_mim_loss_counts_masked_positions_only() -> None:
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 10.0  # position 0: confident and right
    logits[0, 1, 0] = 10.0  # position 1: confident and wrong, but unmasked
    targets = torch.tensor([[2, 3, 1]])
    mask = torch.tensor([[True, False, True]])
    expected = (-torch.log_softmax(logits[0, 0], -1)[2] - torch.log_softmax(logits[0, 2], -1)[1]).item() / 2
    assert mim_loss(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)


def test_masked_patches_never_reach_the_encoder(tiny_model) -> None:
    """Changing the pixels of masked patches must not change anything the encoder computes."""
    cfg = tiny_model.config
    p, grid = cfg.vision.patch_size, cfg.grid
    images = torch.randn(2, 3, 64, 64)
    mask = random_patch_mask(2, grid * grid, cfg.mim_ratio, torch.Generator().manual_seed(3))
    altered = images.clone()
    for b in range(2):
        for idx in mask[b].nonzero().flatten().tolist():
            r, c = divmod(idx, grid)
            altered[b, :, r * p : (r + 1) * p, c * p : (c + 1) * p] = torch.randn(3, p, p) * 5
    domain = torch.tensor([1, 2])
    with torch.no_grad():
        a = tiny_model.forward_train(images, domain, mask)
        b = tiny_model.forward_train(altered, domain, mask)
        assert a.token_logits is not None and b.token_logits is not None
        assert torch.equal(a.token_logits, b.token_logits)  # MIM: the encoder never sees the hidden patches
        # classification (features, prompt and class logits) sees the whole image, as a deployed model does
        assert torch.equal(a.features, tiny_model.encode_image(images, domain))
        assert not torch.equal(a.features, b.features)
        # ...while the targets come from the real pixels, and an unmasked change does reach the encoder
        assert not torch.equal(tiny_model.tokenizer(images)[mask], tiny_model.tokenizer(altered)[mask])
        visible = images.clone()
        r, c = divmod(int((~mask[0]).nonzero()[0]), grid)
        visible[0, :, r * p : (r + 1) * p, c * p : (c + 1) * p] += 3.0
        assert not torch.equal(tiny_model.forward_train(visible, domain, mask).features[0], a.features[0])


def test_patch_tokenizer_is_deterministic_and_fit_reduces_distortion(tiny_model) -> None:
    tok = tiny_model.tokenizer
    images = torch.randn(8, 3, 64, 64)
    ids = tok(images)
    assert ids.shape == (8, 64) and ids.dtype == torch.long
    assert torch.equal(ids, tok(images))
    codes = tok._codes(images).flatten(0, 1)
    before = (codes @ tok.codebook.T).max(-1).values.mean()
    tok.fit(images)
    after = (codes @ tok.codebook.T).max(-1).values.mean()
    assert after > before
