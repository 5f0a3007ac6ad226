"""GM-DF's losses: prompt contrastive loss (eq. 11), classification, masked image modelling (eq. 6) and the
domain-alignment Frechet distance (journal eq. 8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..device import full_precision


def domain_class_contrastive_loss(logits: torch.Tensor, domain: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Contrastive loss over all (domain, class) prompts, eq. 11.

    ``-log exp(s(i, d_i, c_i) / tau_{d_i}) / sum_{d, c} exp(s(i, d, c) / tau_{d_i})``, averaged over the batch:
    all of sample i's logits are scaled by its own domain's temperature (``GMDF.prompt_logits``).
    A sample of a known domain (d_i >= 1) is contrasted against the source-domain prompts only: the wildcard stands
    for "any domain" and must not be pushed away from them. A sample seen as unseen (d_i = 0, e.g. the meta-test
    domain) is contrasted against all prompts, wildcard included.

    logits: (B, N+1, 2) temperature-scaled similarities; domain: (B,) in 0..N; label: (B,) in {0 real, 1 fake}.
    """
    bsz, n_dom, _ = logits.shape
    masked = logits.clone()
    masked[:, 0] = torch.where((domain > 0).view(-1, 1), torch.full_like(logits[:, 0], float("-inf")), logits[:, 0])
    target = domain * 2 + label
    return F.cross_entropy(masked.reshape(bsz, n_dom * 2), target)


def classification_loss(class_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """L_cls: cross-entropy of real/fake logits (B, 2) computed with each sample's own domain prompts."""
    return F.cross_entropy(class_logits, label)


def mim_loss(token_logits: torch.Tensor, target_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_mim, eq. 6: cross-entropy of predicted visual tokens at masked positions only.

    token_logits: (B, P, K); target_ids: (B, P); mask: (B, P) bool.
    """
    return F.cross_entropy(token_logits[mask].float(), target_ids[mask])


def _covariance(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / max(1, x.shape[0] - 1)


def frechet_distance(
    mu_s: torch.Tensor, cov_s: torch.Tensor, mu_t: torch.Tensor, cov_t: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """``||mu_s - mu_t||^2 + Tr(S_s + S_t - 2 (S_s S_t)^(1/2))`` (journal eq. 8), differentiable and stable.

    ``Tr((S_s S_t)^(1/2))`` is the sum of square roots of the eigenvalues of ``S_s S_t``, which equal those of the
    symmetric PSD matrix ``L^T S_t L`` with ``S_s = L L^T`` (Cholesky). ``eigvalsh`` has a well-defined gradient even
    with repeated eigenvalues (unlike an eigenvector-based sqrtm), and a ridge ``eps I`` keeps rank-deficient batch
    covariances factorable.

    mu: (F,), cov: (F, F). Returns a scalar.
    """
    eye = torch.eye(cov_s.shape[0], dtype=cov_s.dtype, device=cov_s.device)
    if not bool(torch.isfinite(cov_s).all() and torch.isfinite(cov_t).all()):
        # an overflow upstream (fp16 before the loss scaler has settled): a NaN loss makes the scaler skip the
        # step, where a factorisation of non-finite matrices would raise
        return (cov_s.sum() + cov_t.sum() + mu_s.sum() + mu_t.sum()) * float("nan")
    chol = torch.linalg.cholesky(cov_s + eps * eye)
    middle = chol.T @ (cov_t + eps * eye) @ chol
    middle = (middle + middle.T) / 2
    eig = torch.linalg.eigvalsh(middle).clamp_min(1e-12)
    tr_sqrt = eig.sqrt().sum()
    return (mu_s - mu_t).pow(2).sum() + torch.trace(cov_s) + torch.trace(cov_t) + 2 * eps * cov_s.shape[0] - 2 * tr_sqrt


def domain_alignment_loss(source: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Frechet distance between meta-train features (B_s, F) and meta-test features (B_t, F) (journal eq. 8).
    Always computed in fp32, also under mixed precision: covariances, Cholesky and eigenvalues are not safe in
    bf16/fp16."""
    with full_precision(source):
        source, target = source.float(), target.float()
        return frechet_distance(source.mean(0), _covariance(source), target.mean(0), _covariance(target), eps)
