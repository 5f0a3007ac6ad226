"""The GM-DF detector: CLIP's towers wrapped with the paper's components, and the one factory that builds it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import tokenize
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from .components import (
    DomainClassPrompts,
    DomainExperts,
    DomainNorm,
    PatchTokenizer,
    SecondOrderAggregation,
    TextEncoder,
    domain_vector,
    modulate,
)
from .config import TOWER_KINDS, WILDCARD, GMDFConfig, clip_shape

Domain = int | torch.Tensor
"""A domain index for the whole batch (int) or per sample (LongTensor (B,)); 0 is the wildcard."""


class GMDFBlock(nn.Module):
    """One transformer block with GM-DF's Dataset-Embedding Generator (sec. 3.1), eq. 3 in CLIP's pre-norm form:

    ``x_att = x + MHA(LN_1(x))``, ``h = DNorm(x_att, c_d)`` (eq. 2, in place of CLIP's LN_2),
    ``ffn = MLP(h) + Experts(x_att)`` (journal eq. 1 and 6: expert i sees ``DNorm(x_att, c_i)``, its own domain's),
    ``x_out = x_att + ffn``. With zero-initialised modulation and expert scales this is exactly CLIP's block.

    x: (B, L, D), c: the samples' domain embedding (C,) or (B, C), sources: the N source domains' (N, C), own: the
    samples' domain indices -> (x_out (B, L, D), ffn (B, L, D), second-order term (B, D) or None).
    """

    def __init__(self, block: ResidualAttentionBlock, cfg: GMDFConfig) -> None:
        super().__init__()
        if hasattr(block, "ln_1_kv"):
            raise ValueError("cross-attention blocks are not supported")
        self.ln_1 = block.ln_1
        self.attn = block.attn
        self.ls_1 = block.ls_1
        self.mlp = block.mlp
        self.ls_2 = block.ls_2
        width = block.ln_2.normalized_shape[0]
        self.dnorm = DomainNorm(block.ln_2, cfg.domain_dim)
        self.experts = DomainExperts(width, cfg.num_domains, cfg.expert_dim)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        sources: torch.Tensor,
        own: Domain = 0,
        prev_ffn: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        y = self.ln_1(x)
        x = x + self.ls_1(self.attn(y, y, y, need_weights=False)[0])
        normed = self.dnorm.standardize(x)
        h = modulate(normed, *self.dnorm.affine(c))
        ffn = self.ls_2(self.mlp(h)) + self.experts(normed, *self.dnorm.affine(sources), own)
        second = SecondOrderAggregation.second_order(self.attn, y, prev_ffn) if prev_ffn is not None else None
        return x + ffn, ffn, second


class GMDFImageEncoder(nn.Module):
    """CLIP's ViT image tower with GM-DF blocks, domain embeddings, second-order aggregation and MIM masking.

    images (B, 3, H, W), domain int or (B,), patch_mask (B, P) bool or None
    -> pooled features (B, E) (unnormalised), final patch tokens (B, P, D) after ln_post.
    Masked patches are replaced by a learnt mask token BEFORE the first block, so the encoder never sees them.
    """

    def __init__(self, visual: nn.Module, cfg: GMDFConfig) -> None:
        super().__init__()
        if not isinstance(visual, VisionTransformer):
            raise ValueError(f"GM-DF needs open_clip's VisionTransformer, got {type(visual).__name__}")
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise ValueError("only class-token pooling ViTs are supported")
        if not isinstance(visual.patch_dropout, nn.Identity):
            raise ValueError("patch dropout is not supported")
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.blocks = nn.ModuleList(GMDFBlock(b, cfg) for b in visual.transformer.resblocks)
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        width = cfg.vision.width
        self.agg_layers = tuple(cfg.agg_layers)
        self.domain_embedding = nn.Embedding(cfg.num_domains + 1, cfg.domain_dim)
        nn.init.normal_(self.domain_embedding.weight, std=0.02)
        self.aggregation = SecondOrderAggregation(len(self.agg_layers), width, cfg.agg_adapter_dim)
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)
        self.token_dim = width

    def cam_target(self) -> nn.Module:
        """Where Grad-CAM looks: the last block's first LayerNorm (its tokens, reshaped to the patch grid)."""
        return cast(GMDFBlock, self.blocks[-1]).ln_1

    def domain_vector(self, domain: Domain) -> torch.Tensor:
        return domain_vector(self.domain_embedding, domain)

    def forward(
        self, images: torch.Tensor, domain: Domain = 0, patch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(images).flatten(2).transpose(1, 2)  # (B, P, D)
        if patch_mask is not None:
            x = torch.where(patch_mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        c = self.domain_vector(domain)
        sources = self.domain_embedding.weight[1:]
        terms: list[torch.Tensor] = []
        ffn: torch.Tensor | None = None
        for i, block in enumerate(self.blocks):
            x, new_ffn, second = block(x, c, sources, domain, ffn if i in self.agg_layers else None)
            if second is not None:
                terms.append(second)
            ffn = new_ffn
        x = self.ln_post(x)
        pooled = self.aggregation(x[:, 0], terms)
        if self.proj is not None:
            pooled = pooled @ self.proj
        return pooled, x[:, 1:]


class ImageTower(Protocol):
    """What GM-DF asks of an image tower (``TowerSpec.encoder``): pooled features and MIM tokens for images
    (B, 3, H, W), their domains (B,) or one index for all, and an optional patch mask; the width of its tokens;
    the layer Grad-CAM looks at."""

    token_dim: int

    def __call__(
        self, images: torch.Tensor, domain: int | torch.Tensor = 0, patch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def cam_target(self) -> nn.Module: ...


@dataclass
class GMDFOutput:
    """What one training forward gives: features (B, E) L2-normalised, prompt logits (B, N+1, 2), the real/fake
    logits under each sample's own domain prompts (B, 2), and MIM token logits (B, P, K) (None without a mask)."""

    features: torch.Tensor
    prompt_logits: torch.Tensor
    class_logits: torch.Tensor
    token_logits: torch.Tensor | None


class GMDF(nn.Module):
    """GM-DF: CLIP ViT image tower + Dataset-Embedding Generator + Multi-Dataset Representation + domain-class
    prompts. ``forward`` returns real/fake logits (B, 2) for images (B, 3, H, W); P(fake) is their softmax.

    Text features of the (N+1) x 2 prompts are cached at inference, so scanning runs no text tower per image, and
    ``drop_text_tower`` frees it.
    """

    text_features: torch.Tensor
    text_temperatures: torch.Tensor
    text_cached: torch.Tensor

    def __init__(self, cfg: GMDFConfig, clip: Any) -> None:
        super().__init__()
        self.config = cfg
        backbone_ids = {id(p) for p in clip.parameters()}
        image_ids = {id(p) for p in clip.visual.parameters()}
        tower = TOWER_KINDS[cfg.vision.kind]
        self.visual: ImageTower = tower.load(tower.encoder)(clip.visual, cfg)
        self.text: TextEncoder | None = TextEncoder(clip)
        ids, dom_slots, cls_slot, class_init = _prompt_template(cfg, clip.token_embedding)
        self.prompts = DomainClassPrompts(ids, dom_slots, cls_slot, class_init, cfg.num_domains, cfg.tau_base)
        self.mim_head = nn.Linear(self.visual.token_dim, cfg.mim_vocab)
        self.tokenizer = PatchTokenizer(cfg.vision.patch_size, cfg.mim_vocab, cfg.mim_tokenizer_dim, cfg.mim_seed)
        n_prompts = cfg.num_domains + 1
        self.register_buffer("text_features", torch.zeros(n_prompts, 2, cfg.embed_dim))
        self.register_buffer("text_temperatures", torch.ones(n_prompts))
        self.register_buffer("text_cached", torch.zeros((), dtype=torch.bool))
        self._backbone = {n for n, p in self.named_parameters() if id(p) in backbone_ids}
        self._image_backbone = {n for n, p in self.named_parameters() if id(p) in image_ids}

    # -- domains ---------------------------------------------------------------------------------------------------
    def domain_index(self, name: str | None) -> int:
        """Row of a domain in every domain table: 1..N for source domains, 0 (wildcard) for anything else."""
        if name is None or name == WILDCARD or name not in self.config.domains:
            return 0
        return self.config.domains.index(name) + 1

    # -- text side -------------------------------------------------------------------------------------------------
    def prompt_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised prompt features (N+1, 2, E) and temperatures (N+1,), from the cache when it is valid."""
        if bool(self.text_cached) and not self.training:
            return self.text_features, self.text_temperatures
        if self.text is None:
            raise RuntimeError("text tower was dropped and no cached prompt features are present")
        embeds = self.prompts.embeddings(self.text.token_embedding)
        eot = torch.full((embeds.shape[0],), self.prompts.eot, device=embeds.device)
        feats = F.normalize(self.text(embeds, eot), dim=-1).view(-1, 2, self.config.embed_dim)
        return feats, self.prompts.temperatures()

    @torch.no_grad()
    def cache_text_features(self) -> None:
        """Compute the prompt features once; used for every image until the model trains again. Without a text
        tower the features already cached are kept (a lean file re-saved)."""
        if self.text is None and bool(self.text_cached):
            return
        was_training = self.training
        self.train(False)
        self.text_cached.fill_(False)
        feats, temps = self.prompt_features()
        self.text_features.copy_(feats)
        self.text_temperatures.copy_(temps)
        self.text_cached.fill_(True)
        self.train(was_training)

    def drop_text_tower(self) -> None:
        """Free the text tower (inference only); prompt features must be cached first."""
        if not bool(self.text_cached):
            self.cache_text_features()
        self.text = None

    def train(self, mode: bool = True) -> GMDF:
        if mode and self.text is not None:
            self.text_cached.fill_(False)
        return super().train(mode)

    # -- image side ------------------------------------------------------------------------------------------------
    def encode_image(
        self, images: torch.Tensor, domain: Domain = 0, patch_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """images (B, 3, H, W) -> features (B, E)."""
        pooled, _ = self.visual(images, domain, patch_mask)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def prompt_logits(self, features: torch.Tensor, domain: Domain = 0) -> torch.Tensor:
        """features (B, E) normalised, each sample's domain (int or (B,)) -> ``s(i, d, c) / tau_{d_i}`` for every
        prompt (d, c), (B, N+1, 2): every logit of sample i is divided by the temperature of sample i's own domain
        (MM paper eq. 9-11). Its own row, ``s(i, d_i, c) / tau_{d_i}``, is what a deployed model scores."""
        text, temps = self.prompt_features()
        sims = torch.einsum("be,dce->bdc", features, text)
        tau = temps[torch.as_tensor(domain, device=temps.device)].expand(sims.shape[0])
        return sims / tau.view(-1, 1, 1)

    def forward(self, images: torch.Tensor, domain: Domain = 0) -> torch.Tensor:
        """images (B, 3, H, W) -> real/fake logits (B, 2) under the domain's prompts (wildcard by default)."""
        logits = self.prompt_logits(self.encode_image(images, domain), domain)
        rows = torch.as_tensor(domain, device=logits.device).expand(logits.shape[0])
        return logits[torch.arange(logits.shape[0], device=logits.device), rows]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, domain: Domain = 0) -> torch.Tensor:
        """P(fake) (B,) in [0, 1]."""
        return self(images, domain).softmax(-1)[:, 1]

    @torch.no_grad()
    def score(self, images: torch.Tensor, domain: Domain = 0) -> list[float]:
        """P(fake) as plain floats for images (B, 3, H, W) given on any device in fp32: moved to the model's own
        device and dtype first (pinned host memory is copied asynchronously to a GPU)."""
        param = next(self.parameters())
        batch = images.to(param.device, non_blocking=images.is_pinned()).to(param.dtype)
        return self.predict(batch, domain).float().cpu().tolist()

    def forward_train(
        self, images: torch.Tensor, domain: torch.Tensor, patch_mask: torch.Tensor | None = None
    ) -> GMDFOutput:
        """The classification outputs (features, prompt and class logits) of the whole images, as a deployed model
        sees them, and with a patch mask (B, P) the MIM token logits of the masked images (eq. 6-7), whose hidden
        patches the encoder never sees. Two passes, not one over [whole; masked]: a BatchNorm tower (cnn-small) would
        otherwise normalise the masked images with statistics of the whole ones."""
        pooled, tokens = self.visual(images, domain)
        if patch_mask is not None:
            _, tokens = self.visual(images, domain, patch_mask)
        features = F.normalize(pooled, dim=-1)
        logits = self.prompt_logits(features, domain)
        class_logits = logits[torch.arange(logits.shape[0], device=logits.device), domain]
        token_logits = self.mim_head(tokens) if patch_mask is not None else None
        return GMDFOutput(features, logits, class_logits, token_logits)

    # -- bookkeeping -----------------------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Parameters: total, the CLIP backbone's (both towers), its image tower's, and what GM-DF adds."""
        named = dict(self.named_parameters())
        backbone = sum(p.numel() for n, p in named.items() if n in self._backbone)
        image = sum(p.numel() for n, p in named.items() if n in self._image_backbone)
        total = sum(p.numel() for p in named.values())
        return {"total": total, "backbone": backbone, "image_backbone": image, "added": total - backbone}

    def gmdf_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters that GM-DF adds on top of CLIP (experts, modulation, prompts, heads...)."""
        return [(n, p) for n, p in self.named_parameters() if n not in self._backbone]


def _prompt_template(
    cfg: GMDFConfig, token_embedding: nn.Embedding
) -> tuple[torch.Tensor, list[int], int, torch.Tensor]:
    """Token ids of eq. 9's template with placeholder slots, and the class vectors' initial values."""
    placeholder = "x"
    text = cfg.prompt_template.format(dom=" ".join([placeholder] * cfg.prompt_ctx), cls=placeholder)
    with torch.device("cpu"):  # token ids are data, also when the model is built on the meta device
        ids = tokenize([text], context_length=cfg.text.context_length)
        slot_id = int(tokenize([placeholder], context_length=cfg.text.context_length)[0, 1])
        words = tokenize(["real", "fake"], context_length=cfg.text.context_length)[:, 1]
    slots = (ids[0] == slot_id).nonzero().flatten().tolist()
    if len(slots) != cfg.prompt_ctx + 1:
        raise ValueError(f"prompt template {cfg.prompt_template!r} must contain {{dom}} before {{cls}} once each")
    with torch.no_grad():
        class_init = token_embedding(words.to(token_embedding.weight.device)).detach().clone()
    return ids, slots[:-1], slots[-1], class_init


def _open_clip_name(cfg: GMDFConfig) -> str:
    """The open_clip architecture name for ``cfg``; custom shapes are registered with open_clip on the fly."""
    if cfg.clip_model:
        return cfg.clip_model
    name = f"gmdf-{cfg.name}"
    if name not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="gmdf-open-clip-"))
        (folder / f"{name}.json").write_text(json.dumps(clip_shape(cfg)))
        open_clip.add_model_config(folder)
    return name


def build_clip(cfg: GMDFConfig, pretrained: str | None = None) -> nn.Module:
    """The CLIP backbone for ``cfg``. With ``pretrained`` (an open_clip tag such as ``openai``, or a local CLIP
    checkpoint file) the weights are resolved and loaded by open_clip's own pretrained mechanism; without it the
    backbone is randomly initialised. A tower open_clip has no CLIP for builds its own (``TowerSpec.backbone``:
    MobileNetV2's loads its own weights, ``nsfwjs``)."""
    tower = TOWER_KINDS[cfg.vision.kind]
    if tower.backbone is not None:
        backbone: nn.Module = tower.load(tower.backbone)(cfg, pretrained)
        return backbone
    if pretrained:
        model = open_clip.create_model(
            _open_clip_name(cfg), pretrained=pretrained, force_quick_gelu=cfg.quick_gelu, require_pretrained=True
        )
    else:
        shape = clip_shape(cfg)
        model = open_clip.CLIP(**shape)
    model.train(False)
    return model


def build_model(cfg: GMDFConfig, pretrained: str | None = None, clip: nn.Module | None = None) -> GMDF:
    """The one factory: a GM-DF model for ``cfg``, on top of ``clip`` or of :func:`build_clip`'s backbone."""
    model = GMDF(cfg, clip if clip is not None else build_clip(cfg, pretrained))
    model.train(False)
    return model
