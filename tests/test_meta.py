"""Journal Algorithm 1, step by step: what the meta-train phase changes (theta_E only, kept), what the meta-test phase
changes (theta_O only), and what --second-order adds to the outer gradient. Real tiny models, no mocks."""

from __future__ import annotations

import copy

import pytest
import torch

from gmdf_cli.model import build_model, classification_loss, get_config, random_patch_mask
from gmdf_cli.train.loop import MetaObjective, TrainRequest, is_theta_e, set_trainable

from .conftest import perturbed

DOMAINS = ["a", "b", "c"]


def _setup(second_order: bool = False, inner_lr: float = 0.05) -> tuple[MetaObjective, list[torch.nn.Parameter]]:
    torch.manual_seed(0)
    model = perturbed(build_model(get_config("vit-tiny").with_domains(DOMAINS)), std=0.1)
    model.train(True)
    trainable = set_trainable(model, baseline=False)
    request = TrainRequest(
        domains=DOMAINS, data="-", out="-", config="vit-tiny", second_order=second_order, inner_lr=inner_lr
    )
    return MetaObjective(model, request), trainable


def _parts() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    cfg = get_config("vit-tiny")
    gen = torch.Generator().manual_seed(1)
    size, patches = cfg.vision.image_size, cfg.grid**2
    return [
        (torch.randn(4, 3, size, size, generator=gen), torch.tensor([0, 1, 0, 1]),
         random_patch_mask(4, patches, cfg.mim_ratio, gen))
        for _ in range(3)
    ]  # fmt: skip


def _snapshot(objective: MetaObjective, theta_e: bool) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().clone()
        for n, p in objective.model.named_parameters()
        if is_theta_e(n) == theta_e and not n.startswith("text.") and (theta_e or p.requires_grad)
    }


def test_the_split_theta_e_learns_by_its_own_steps_theta_o_by_the_optimizer() -> None:
    objective, trainable = _setup()
    names = {id(p): n for n, p in objective.model.named_parameters()}
    assert trainable and all(not is_theta_e(names[id(p)]) for p in trainable)
    assert all(not p.requires_grad for _, p in objective.theta_e)  # DDP and the optimizer leave theta_E alone
    assert {n.split(".")[0] for n, _ in objective.theta_e} == {"visual", "prompts"}


def test_the_meta_train_phase_is_a_gradient_step_per_domain_on_theta_e_and_leaves_theta_o() -> None:
    objective, _ = _setup()
    parts = _parts()
    before_o = _snapshot(objective, theta_e=False)
    # by hand: theta_E - beta * grad L_cls of domain 1's batch, then of domain 2's batch at the updated theta_E
    manual = copy.deepcopy(objective.model)
    for (x, y, _), idx in ((parts[0], 1), (parts[1], 2)):
        e = [p for n, p in manual.named_parameters() if is_theta_e(n)]
        for p in e:
            p.requires_grad_(True)
        loss = classification_loss(manual.forward_train(x, torch.full((4,), idx)).class_logits, y)
        grads = torch.autograd.grad(loss, e, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(e, grads, strict=True):
                if g is not None:
                    p.sub_(0.05 * g)
    fast, _, _ = objective.inner([(parts[0], 1), (parts[1], 2)])
    expected = {f"model.{n}": p for n, p in manual.named_parameters() if is_theta_e(n)}
    moved = 0
    for key, value in fast.items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-7)
        moved += not torch.equal(value, dict(objective.model.named_parameters())[key[len("model.") :]])
    assert moved > 10
    after_o = _snapshot(objective, theta_e=False)
    assert all(torch.equal(before_o[n], after_o[n]) for n in before_o)  # theta_O untouched by the inner steps


def test_the_inner_updates_are_kept_and_the_outer_step_moves_theta_o_only() -> None:
    objective, trainable = _setup()
    parts = _parts()
    before_e, before_o = _snapshot(objective, True), _snapshot(objective, False)
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    loss, _ = objective("meta", [(parts[0], 1), (parts[1], 2)], parts[2])
    after_inner = _snapshot(objective, True)
    assert sum(not torch.equal(before_e[n], after_inner[n]) for n in before_e) > 10  # kept in the model
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after_e, after_o = _snapshot(objective, True), _snapshot(objective, False)
    assert all(torch.equal(after_inner[n], after_e[n]) for n in after_e)  # the outer step leaves theta_E
    assert sum(not torch.equal(before_o[n], after_o[n]) for n in before_o) > 0.9 * len(before_o)


def test_second_order_changes_the_outer_gradient() -> None:
    grads = {}
    for second in (False, True):
        objective, trainable = _setup(second_order=second, inner_lr=0.5)
        loss, _ = objective("meta", [(_parts()[0], 1), (_parts()[1], 2)], _parts()[2])
        loss.backward()
        grads[second] = torch.cat([p.grad.flatten() for p in trainable if p.grad is not None])
    assert grads[False].shape == grads[True].shape
    difference = (grads[True] - grads[False]).norm() / grads[False].norm()
    assert difference > 1e-4, float(difference)


@pytest.mark.parametrize("second", [False, True])
def test_a_single_meta_train_domain_and_no_meta_test_batch_still_trains_theta_e(second: bool) -> None:
    objective, _ = _setup(second_order=second)
    before = _snapshot(objective, True)
    loss, logs = objective("meta", [(_parts()[0], 1)], None)
    assert loss.item() == 0.0 and "train_cls" in logs
    assert any(not torch.equal(before[n], p) for n, p in _snapshot(objective, True).items())
