"""The model module: init equivalence with CLIP, component maths, domains, text-feature cache, parameter budget."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from gmdf_cli.model import (
    CONFIGS,
    DomainExperts,
    DomainNorm,
    GMDFConfig,
    SecondOrderAggregation,
    build_clip,
    build_model,
    get_config,
    random_patch_mask,
    scaled_agg_layers,
)
from gmdf_cli.model.config import TOWER_KINDS

from .conftest import perturbed


def registered_configs() -> list:
    """Every config in the registry, so that one added there gets these tests too; one with a full-size tower (the
    paper's ViT-B/16: half a minute to build twice and run on two cores) is in the slow tier."""
    return [
        pytest.param(name, marks=pytest.mark.slow if cfg.vision.width >= 512 else ()) for name, cfg in CONFIGS.items()
    ]


@pytest.mark.parametrize("name", registered_configs())
def test_fresh_gmdf_reproduces_clip_image_features(name: str) -> None:
    cfg = get_config(name)
    torch.manual_seed(1)
    clip = build_clip(cfg)
    with torch.no_grad():  # non-trivial norms, so DNorm's reuse of gamma0/beta0 (and BN statistics) is tested
        for m in clip.modules():
            if isinstance(m, nn.LayerNorm | nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    reference = copy.deepcopy(clip)
    model = build_model(cfg, clip=clip)
    images = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    with torch.no_grad():
        expected = reference.encode_image(images)
        for domain in (0, 1, torch.tensor([2, 0])):
            got = model.encode_image(images, domain, normalize=False)
            assert (got - expected).abs().max().item() < 1e-5


def test_vit_b_16_additions_stay_under_five_percent() -> None:
    counts = build_model(get_config("vit-b-16")).parameter_counts()
    assert counts["backbone"] > 140_000_000  # CLIP ViT-B/16 with its text tower
    assert 0 < counts["added"] <= 0.05 * counts["backbone"]
    assert counts["added"] <= 0.05 * counts["image_backbone"]


def test_perturbed_model_differs_from_clip_and_uses_its_domain(tiny_model) -> None:
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        wildcard = tiny_model.encode_image(images, 0)
        source = tiny_model.encode_image(images, 1)
        per_sample = tiny_model.encode_image(images, torch.tensor([1, 1, 1]))
    assert (wildcard - source).abs().max() > 1e-4
    torch.testing.assert_close(source, per_sample, atol=1e-5, rtol=0)


def test_dnorm_matches_equation_2() -> None:
    norm = nn.LayerNorm(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    dn = DomainNorm(norm, domain_dim=3)
    with torch.no_grad():
        dn.to_gamma.weight.normal_()
        dn.to_beta.weight.normal_()
    x = torch.randn(2, 5, 6)
    c = torch.randn(2, 3)
    mu = x.mean(-1, keepdim=True)
    sigma = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    gamma = norm.weight + c @ dn.to_gamma.weight.T
    beta = norm.bias + c @ dn.to_beta.weight.T
    expected = (x - mu) / sigma * gamma[:, None] + beta[:, None]
    torch.testing.assert_close(dn(x, c), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dn(x[:1], c[0]), expected[:1], atol=1e-5, rtol=1e-5)  # fused shared-domain path


def test_each_expert_sees_its_own_domains_dnorm_and_eq_6_mixes_their_outputs() -> None:
    torch.manual_seed(0)
    dim, n, r = 6, 3, 4
    experts = DomainExperts(dim, n, r)
    with torch.no_grad():
        experts.scale.normal_()
    normed = torch.randn(2, 5, dim)
    gamma, beta = torch.randn(n, dim), torch.randn(n, dim)
    # by hand, expert by expert: E_i = U_i GELU(W_i (n * gamma_i + beta_i) + b_i) + b'_i
    rows = []
    for i in range(n):
        h = normed * gamma[i] + beta[i]
        hidden = torch.nn.functional.gelu(h @ experts.down_weight[i].T + experts.down_bias[i])
        rows.append(hidden @ experts.up_weight[i].T + experts.up_bias[i])
    e = torch.stack(rows, dim=-2)  # (B, L, N, D): Q = K = V = Concat(dF_1, ..., dF_N)
    expected = torch.zeros(2, 5, dim)
    for b in range(2):
        for t in range(5):
            q = e[b, t]
            attn = torch.softmax(q @ q.T / dim**0.5, dim=-1)
            expected[b, t] = (attn @ q).mean(0) * experts.scale
    torch.testing.assert_close(experts(normed, gamma, beta), expected, atol=1e-5, rtol=1e-5)
    # an expert's input is its own domain's DNorm: changing domain 2's affine moves expert 2's output alone
    moved = gamma.clone()
    moved[1] += 1.0
    before, after = experts.expert_outputs(normed, gamma, beta), experts.expert_outputs(normed, moved, beta)
    changed = (after - before).abs().amax(dim=(0, 1, 3)) > 1e-4
    assert changed.tolist() == [False, True, False]


def _expert_gradients(model, domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per expert, the gradient norm reaching its weights in block 0, and per domain-embedding row its gradient norm,
    after one classification loss on samples of ``domain``."""
    model.train(True)
    model.zero_grad()
    images = torch.randn(len(domain), 3, 64, 64, generator=torch.Generator().manual_seed(3))
    out = model.forward_train(images, domain)
    torch.nn.functional.cross_entropy(out.class_logits, torch.tensor([0, 1] * (len(domain) // 2))).backward()
    experts = model.visual.blocks[0].experts
    per_expert = experts.down_weight.grad.flatten(1).norm(dim=1) + experts.up_weight.grad.flatten(1).norm(dim=1)
    return per_expert, model.visual.domain_embedding.weight.grad.norm(dim=1)


def test_a_source_domains_samples_train_its_own_expert_and_wildcard_samples_train_all() -> None:
    torch.manual_seed(0)
    model = perturbed(build_model(get_config("vit-tiny")), std=0.1)  # scales and DNorm weights away from zero
    per_expert, per_row = _expert_gradients(model, torch.tensor([2, 2, 2, 2]))
    assert per_expert[1] > 0 and per_expert[0] == 0 and per_expert[2] == 0
    assert per_row[2] > 0 and per_row[1] == 0 and per_row[3] == 0  # the other sources' DNorm codes untouched
    per_expert, _ = _expert_gradients(model, torch.tensor([1, 1, 3, 3]))
    assert per_expert[0] > 0 and per_expert[2] > 0 and per_expert[1] == 0
    per_expert, _ = _expert_gradients(model, torch.tensor([0, 0, 0, 0]))
    assert bool((per_expert > 0).all())


def test_a_file_with_the_old_expert_layout_gets_one_clear_line(tmp_path) -> None:
    raw = json.loads(get_config("vit-tiny").to_json())
    raw["expert_attn_dim"] = 8
    with pytest.raises(ValueError, match="retrain it"):
        GMDFConfig.from_json(json.dumps(raw))


def test_second_order_term_equals_the_naive_per_token_computation() -> None:
    torch.manual_seed(0)
    dim, heads, length = 16, 4, 9
    attn = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        attn.in_proj_bias.normal_()
    x = torch.randn(2, length, dim)
    m = torch.randn(2, length, dim)
    _, weights = attn(x, x, x, need_weights=True, average_attn_weights=False)  # (B, H, L, L)
    w_v = attn.in_proj_weight[2 * dim :]
    b_v = attn.in_proj_bias[2 * dim :]
    values = (m @ w_v.T + b_v).view(2, length, heads, dim // heads)  # W_V m_j per head
    per_head = torch.einsum("bhj,bjhe->bhe", weights[:, :, 0], values)
    expected = attn.out_proj(per_head.reshape(2, dim))
    got = SecondOrderAggregation.second_order(attn, x, m)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_scaled_aggregation_layers() -> None:
    assert scaled_agg_layers(12) == (7, 8, 9)  # the paper's layers 8-10, 0-based
    assert CONFIGS["vit-b-16"].agg_layers == (7, 8, 9)
    small = scaled_agg_layers(4)
    assert small and all(1 <= i < 4 for i in small)


def test_unknown_domains_use_the_wildcard_not_a_source_domain(tiny_model) -> None:
    assert tiny_model.domain_index("ff") == 1
    assert tiny_model.domain_index("dff") == 3
    assert tiny_model.domain_index("dfdc") == 0
    assert tiny_model.domain_index(None) == 0


def test_cached_text_features_equal_live_ones_and_text_tower_can_go(tiny_model) -> None:
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        live = tiny_model(images)  # logits: a random tiny model's probabilities may all round to 1
        tiny_model.cache_text_features()
        assert bool(tiny_model.text_cached)
        tiny_model.drop_text_tower()
        assert tiny_model.text is None
        torch.testing.assert_close(tiny_model(images), live)
    assert (live[:, 1] - live[:, 0]).abs().min() > 0.1


def test_training_mode_invalidates_the_cache(tiny_model) -> None:
    tiny_model.cache_text_features()
    tiny_model.train()
    assert not bool(tiny_model.text_cached)
    out = tiny_model.forward_train(torch.randn(2, 3, 64, 64), torch.tensor([1, 0]), random_patch_mask(2, 64, 0.2))
    assert out.prompt_logits.shape == (2, 4, 2)
    assert out.token_logits is not None and out.token_logits.shape == (2, 64, 64)
    out.class_logits.sum().backward()
    assert tiny_model.prompts.dom_ctx.grad is not None  # prompts learn through the text tower


def test_config_json_round_trip_and_validation() -> None:
    cfg = get_config("vit-tiny").with_domains(["a", "b"])
    assert GMDFConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError):
        cfg.with_domains(["a", "a"])
    with pytest.raises(ValueError):
        cfg.replace(agg_layers=(9,))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_config_aggregates_only_blocks_its_tower_has(name: str) -> None:
    """Each tower kind's spec (``TOWER_KINDS``) says how deep its tower is and the lowest block eq. 7-8 may use:
    the config's own layers are inside, one past either end is refused."""
    cfg = get_config(name)
    tower = TOWER_KINDS[cfg.vision.kind]
    depth = tower.depth(cfg.vision)
    assert all(tower.first_agg <= i < depth for i in cfg.agg_layers)
    for outside in (depth, tower.first_agg - 1):
        with pytest.raises(ValueError, match="agg_layers"):
            cfg.replace(agg_layers=(outside,))


@pytest.mark.parametrize("kind", list(TOWER_KINDS))
def test_every_tower_spec_names_code_that_exists(kind: str) -> None:
    """A ``TowerSpec`` names its encoder (and backbone builder) as text, imported when a model is built: each name
    must be a class of torch's modules (and a function)."""
    spec = TOWER_KINDS[kind]
    assert issubclass(spec.load(spec.encoder), nn.Module)
    assert spec.backbone is None or callable(spec.load(spec.backbone))


def test_patch_mask_hides_exactly_the_ratio() -> None:
    mask = random_patch_mask(4, 196, 0.2, torch.Generator().manual_seed(0))
    assert mask.shape == (4, 196)
    assert (mask.sum(1) == round(0.2 * 196)).all()
    assert not torch.equal(mask[0], mask[1])


def test_perturbed_helper_changes_predictions() -> None:
    model = build_model(get_config("vit-tiny"))
    images = torch.randn(2, 3, 64, 64)
    before = model.predict(images)
    after = perturbed(model).predict(images)
    assert (before - after).abs().max() > 1e-4


def test_backbone_loads_through_open_clips_pretrained_mechanism(tmp_path) -> None:
    """Training starts from CLIP weights that open_clip itself resolves (here a local file; `openai` on the net)."""
    from safetensors.torch import save_file

    cfg = get_config("vit-tiny")
    torch.manual_seed(5)
    source = build_clip(cfg)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_model(cfg, pretrained=str(path))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images, normalize=False), source.encode_image(images))


def test_conv_tower_masks_pixels_before_the_stem_and_routes_by_domain() -> None:
    cfg = get_config("cnn-small")
    torch.manual_seed(2)
    model = perturbed(build_model(cfg))
    size = cfg.vision.image_size
    images = torch.randn(2, 3, size, size)
    mask = random_patch_mask(2, cfg.grid**2, 0.2, torch.Generator().manual_seed(0))
    altered = images.clone()
    for b in range(2):
        for idx in mask[b].nonzero().flatten().tolist():
            r, c = divmod(idx, cfg.grid)
            altered[b, :, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] = torch.randn(3, 16, 16) * 4
    with torch.no_grad():
        a = model.forward_train(images, torch.tensor([1, 2]), mask)
        b = model.forward_train(altered, torch.tensor([1, 2]), mask)
        assert a.token_logits is not None and b.token_logits is not None
        assert torch.equal(a.token_logits, b.token_logits)  # masked pixels are painted over before the stem
        assert torch.equal(a.features, model.encode_image(images, torch.tensor([1, 2])))  # the whole image
        assert a.token_logits.shape == (2, cfg.grid**2, cfg.mim_vocab)
        assert (model.encode_image(images, 1) - model.encode_image(images, 2)).abs().max() > 1e-4
    counts = model.parameter_counts()
    assert counts["added"] <= 0.12 * counts["image_backbone"]


def test_each_sample_is_scaled_by_its_own_domains_temperature(tiny_model) -> None:
    """MM eq. 9-11: every logit of sample i is s(i, d, c) / tau_{d_i}, tau_d = tau_base + phi * ||e_dom^d||."""
    model = tiny_model.train(False)
    with torch.no_grad():
        model.prompts.phi.fill_(0.5)  # domains' temperatures now differ (their prompt vectors' norms differ)
    text, temps = (t.detach() for t in model.prompt_features())
    assert len({round(float(t), 6) for t in temps.detach()}) == len(temps)
    features = torch.nn.functional.normalize(torch.randn(2, text.shape[-1], generator=torch.Generator().manual_seed(0)))
    domain = torch.tensor([1, 2])
    logits = model.prompt_logits(features, domain).detach()
    for i in range(2):
        tau = float(model.prompts.tau_base) + 0.5 * float(model.prompts.dom_ctx[int(domain[i])].detach().norm())
        for d in range(text.shape[0]):
            for c in range(2):
                expected = float(features[i] @ text[d, c]) / tau
                assert float(logits[i, d, c]) == pytest.approx(expected, rel=1e-5)
    # what a deployed model scores, its own domain's row, is the same under either reading
    assert torch.allclose(logits[0, 1], (features[0] @ text[1].T) / temps[1])


def test_a_negative_temperature_slope_never_takes_tau_below_its_base(tiny_model) -> None:
    """eq. 10 with phi < 0 and large prompt norms used to reach the 1e-3 floor (logits x1000, a diverged run)."""
    prompts = tiny_model.prompts
    with torch.no_grad():
        prompts.phi.fill_(-0.05)
        prompts.dom_ctx.mul_(0).add_(1.0)  # every domain's prompt norm well above 0.01 / 0.05
    assert torch.allclose(prompts.temperatures().detach(), prompts.tau_base.expand(prompts.dom_ctx.shape[0]))
