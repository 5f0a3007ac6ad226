"""The GM-DF detector: CLIP's towers wrapped with the paper's components, and the one factory that builds it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from .components import Domain, DomainClassPrompts, PatchTokenizer, TextEncoder
from .config import TOWER_KINDS, WILDCARD, GMDFConfig, clip_shape

CPU_CHUNK = 8
"""Images one forward pass takes on a CPU (``GMDF.score``): larger batches only cost memory there. Measured on 2
cores: a vit-b-16 scan of 32 frames peaks at 1,127 MB at 8 against 1,303 MB at 16 (24.9 against 26.0 s), and
the mnv2 model scores 19.7 faces/s at 8 against 16.1 at 16."""


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

    def __init__(self, cfg: GMDFConfig, visual: nn.Module, clip: Any | None = None) -> None:
        """``visual``: the backbone's bare image tower (a CLIP's ``visual``); ``clip``: the whole CLIP, whose text
        tower encodes the prompts. Without ``clip`` no text tower is built: such a model scores with the prompt
        features cached in its weights (loaded over its placeholder prompts) and cannot train."""
        super().__init__()
        self.config = cfg
        backbone_ids = {id(p) for p in (clip if clip is not None else visual).parameters()}
        image_ids = {id(p) for p in visual.parameters()}
        tower = TOWER_KINDS[cfg.vision.kind]
        self.visual: ImageTower = tower.load(tower.encoder)(visual, cfg)
        self.text: TextEncoder | None = TextEncoder(clip) if clip is not None else None
        ids, dom_slots, cls_slot, class_init = (
            _prompt_template(cfg, clip.token_embedding) if clip is not None else _placeholder_template(cfg)
        )
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
        device and dtype first (pinned host memory is copied asynchronously to a GPU). On a CPU at most
        ``CPU_CHUNK`` images go through one forward pass."""
        param = next(self.parameters())
        chunk = CPU_CHUNK if param.device.type == "cpu" else max(1, len(images))
        scores: list[float] = []
        for start in range(0, len(images), chunk):
            part = images[start : start + chunk]
            batch = part.to(param.device, non_blocking=part.is_pinned()).to(param.dtype)
            rows = domain[start : start + chunk] if isinstance(domain, torch.Tensor) and domain.dim() else domain
            scores += self.predict(batch, rows).float().cpu().tolist()
        return scores

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
    from open_clip.tokenizer import tokenize

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


def _placeholder_template(cfg: GMDFConfig) -> tuple[torch.Tensor, list[int], int, torch.Tensor]:
    """``_prompt_template``'s shapes without a tokenizer or text tower, for a model whose prompts are loaded from
    its weights and whose prompt features are cached there: (1, T) zero ids, the slots after the start token, and
    zero class vectors (2, text width)."""
    ids = torch.zeros(1, cfg.text.context_length, dtype=torch.long)
    slots = list(range(1, cfg.prompt_ctx + 2))
    return ids, slots[:-1], slots[-1], torch.zeros(2, cfg.text.width)


def _open_clip_name(cfg: GMDFConfig) -> str:
    """The open_clip architecture name for ``cfg``; custom shapes are registered with open_clip on the fly."""
    import open_clip

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
    import open_clip

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


def build_model(
    cfg: GMDFConfig, pretrained: str | None = None, clip: nn.Module | None = None, text: bool = True
) -> GMDF:
    """The one factory: a GM-DF model for ``cfg``, on top of ``clip`` or of :func:`build_clip`'s backbone. With
    ``text`` False only the image tower is built (``TowerSpec.visual``, else a CLIP's): a model for weights that
    carry cached prompt features, scored without the text tower, its tokenizer or (for towers of our own) open_clip
    ever loading."""
    if not text:
        tower = TOWER_KINDS[cfg.vision.kind]
        visual = tower.load(tower.visual)(cfg) if tower.visual is not None else build_clip(cfg).visual
        model = GMDF(cfg, cast(nn.Module, visual))
    else:
        backbone = clip if clip is not None else build_clip(cfg, pretrained)
        model = GMDF(cfg, cast(nn.Module, backbone.visual), backbone)
    model.train(False)
    return model
