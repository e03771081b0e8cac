"""One training step of each recipe (one iteration of the authors' code_cse/train_cse_withval.py: four forward
passes of one shared network, no EMA).

``"reference"`` — CSE exactly as the authors' code (4 passes, one shared network, no EMA):

1. pass 1 (grad, batch nl+nu): weak ``cat[xl, xu]`` → ``p_w``; ``conf, ŷ = max/argmax p_w``;
2. SMC (no grad): ``s = SMC(cat[zeros_like(su), su])`` (the labelled half of the strong batch is zeros);
3. pass 2 (grad, batch nl+nu): ``out_s = net(s)``, only its unlabelled half is used;
4. ``L_sup = CE(out_w[:nl], yl) + DiceSq(p_w[:nl], yl)``;
5. ``L_smc`` = CE against ``ŷ`` with per-patch adaptive thresholds, mean over all voxels;
6. pass 3 (no grad, train mode, batch nu): ``out_u, A = net(xu)``; AGR pseudo-label (LCC);
7. AGR box from ``A`` (27 overlapping candidates, one box for the batch);
8. ``x_mix = xl·m + xu·(1 − m)``; pass 4 (grad, batch nu); ``L_agr = mix_loss``;
9. ``L = L_sup + 1·L_smc + 4·L_agr``.

``lean=True`` (reference losses, 3 passes): the zero half of the strong batch is dropped and the
no-grad pass 3 is merged into pass 1 (its attention map and pseudo-label come from the weak pass).

``"paper"`` — the equations as printed: Dice losses everywhere, SMC Dice vs ``ŷ`` on voxels with a
fixed τ = 0.75, strong view = random gamma, AGR on a non-overlapping α-grid sampled per image from the
softmax of the raw attention sums, mixed label ``yl·m + ŷ·(1 − m)`` from the weak pass (3 passes).

``"supervised"`` — CE + DiceSq on the labelled batch only.

Labelled sample ``i % nl`` is paired with unlabelled sample ``i`` in the mix. Multi-class (K > 2) uses
arg-max for the AGR pseudo-label, with the largest connected component of the classes in
``RecipeConfig.largest_component_classes`` (training/pseudo_labels.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


from lightunetr_core import vocabulary
from lightunetr_core.training.agr import PAPER_ALPHA, REFERENCE_RATIO, agr_box_mask
from lightunetr_core.training.losses import mask_dice_loss, mix_loss, supervised_loss
from lightunetr_core.training.pseudo_labels import agr_pseudo_label
from lightunetr_core.training.smc import (
    PAPER_TAU, SMC_BLOCK, SMC_RATIO, THRESHOLD_EMA, THRESHOLD_INIT, PatchThresholds, smc_loss_paper,
    smc_loss_reference, smc_mask,
)
from lightunetr_core.training.views import strong_view

RECIPES = tuple(vocabulary.RECIPES.values())  # the engine's names


@dataclass
class RecipeConfig:
    recipe: str = "reference"
    lean: bool = False
    lambda_smc: float = 1.0
    lambda_agr: float = 4.0
    threshold_init: float = THRESHOLD_INIT
    threshold_ema: float = THRESHOLD_EMA
    smc_block: int = SMC_BLOCK
    smc_ratio: float = SMC_RATIO
    agr_ratio: float = REFERENCE_RATIO
    paper_tau: float = PAPER_TAU
    paper_alpha: float = PAPER_ALPHA
    # Classes whose AGR pseudo-label keeps only its largest connected component; None: every foreground
    # class (the reference). pseudo_labels.largest_component_classes decides it from the labelled data.
    largest_component_classes: tuple[int, ...] | None = None
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if self.largest_component_classes is not None:
            self.largest_component_classes = tuple(int(c) for c in self.largest_component_classes)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def needs_unlabeled(self) -> bool:
        return self.recipe != "supervised"

    @property
    def uses_thresholds(self) -> bool:
        return self.recipe == "reference"


def make_thresholds(config: RecipeConfig, batch_unlabeled: int, patch_size, device="cpu") -> PatchThresholds | None:
    if not config.uses_thresholds:
        return None
    return PatchThresholds(batch_unlabeled, patch_size, config.threshold_init, config.threshold_ema, device=device)


@dataclass
class StepResult:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # detached scalars


class _Runner:
    def __init__(self, model, config: RecipeConfig, check: Callable[[], None] | None):
        self.model = model
        self.config = config
        self.check = check or (lambda: None)
        self.device = next(model.parameters()).device

    def autocast(self):
        if not self.config.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def forward(self, x, attention: bool = False):
        self.check()
        with self.autocast():
            out = self.model(x, return_attention=True) if attention else self.model(x)
        if attention:
            logits, att = out
            return logits.float(), att.detach().float()
        return out.float()


def _pair(xl: torch.Tensor, n: int) -> torch.Tensor:
    if xl.shape[0] == n:
        return xl
    return xl[torch.arange(n, device=xl.device) % xl.shape[0]]


def training_step(
    model: torch.nn.Module,
    labeled: dict,
    unlabeled: dict | None,
    config: RecipeConfig,
    thresholds: PatchThresholds | None,
    generator: torch.Generator,
    check: Callable[[], None] | None = None,
) -> StepResult:
    """Losses of one iteration (the caller runs ``zero_grad/backward/step``).

    ``labeled``: "image" (nl, C, X, Y, Z), "label" (nl, X, Y, Z); ``unlabeled``: "image",
    "volume_min", "volume_max" (nu, C). ``check`` is called before every forward pass (cancellation).
    """
    run = _Runner(model, config, check)
    xl, yl = labeled["image"], labeled["label"].long()
    if config.recipe == "supervised":
        ce, dice = supervised_loss(run.forward(xl), yl)
        loss = ce + dice
        return StepResult(loss, {"total": loss.detach(), "ce": ce.detach(), "dice": dice.detach()})
    if unlabeled is None:
        raise ValueError(f"recipe {config.recipe!r} needs unlabelled images")
    if config.recipe == "paper":
        return _paper_step(run, xl, yl, unlabeled, config, generator)
    return _reference_step(run, xl, yl, unlabeled, config, thresholds, generator)


def _reference_step(run: _Runner, xl, yl, unlabeled, config, thresholds, generator) -> StepResult:
    if thresholds is None:
        raise ValueError("the reference recipe needs PatchThresholds (make_thresholds)")
    xu = unlabeled["image"]
    nl, nu = xl.shape[0], xu.shape[0]
    spatial = tuple(xu.shape[2:])
    su = strong_view(xu, unlabeled["volume_min"], unlabeled["volume_max"], generator, "reference",
                     unlabeled.get("valid"))

    # Pass 1: weak views (labelled + unlabelled).
    if config.lean:
        out_w, att_w = run.forward(torch.cat([xl, xu]), attention=True)
    else:
        out_w = run.forward(torch.cat([xl, xu]))
    p_w = torch.softmax(out_w, dim=1)
    conf, pseudo = p_w.detach().max(dim=1)

    # SMC masking and pass 2 (strong views).
    if config.lean:
        mask = smc_mask(nu, spatial, generator, config.smc_block, config.smc_ratio, su.device)
        out_s = run.forward(su * mask)
    else:
        mask = smc_mask(nl + nu, spatial, generator, config.smc_block, config.smc_ratio, su.device)
        out_s = run.forward(torch.cat([su.new_zeros((nl,) + tuple(su.shape[1:])), su]) * mask)[nl:]

    ce, dice = supervised_loss(out_w[:nl], yl)
    keep = thresholds.update(conf[nl:])
    l_smc = smc_loss_reference(out_s, pseudo[nl:], keep)

    # Pass 3 (no grad, train mode) → attention map and AGR pseudo-label.
    if config.lean:
        attention, p_u = att_w[nl:], p_w[nl:].detach()
    else:
        with torch.no_grad():
            out_u, attention = run.forward(xu, attention=True)
        p_u = torch.softmax(out_u, dim=1)
    agr_target = agr_pseudo_label(p_u, config.largest_component_classes)
    box = agr_box_mask(attention, generator, "reference", spatial, ratio=config.agr_ratio)

    xl_pair, yl_pair = _pair(xl, nu), _pair(yl, nu)
    x_mix = xl_pair * box + xu * (1.0 - box)
    out_mix = run.forward(x_mix)
    l_agr = mix_loss(out_mix, yl_pair, agr_target, box[:, 0])

    loss = ce + dice + config.lambda_smc * l_smc + config.lambda_agr * l_agr
    terms = {"total": loss, "ce": ce, "dice": dice, "smc": l_smc, "agr": l_agr,
             "smc_kept": keep.mean(), "box_fraction": box.mean()}
    return StepResult(loss, {k: v.detach() for k, v in terms.items()})


def _paper_step(run: _Runner, xl, yl, unlabeled, config, generator) -> StepResult:
    xu = unlabeled["image"]
    nl, nu = xl.shape[0], xu.shape[0]
    spatial = tuple(xu.shape[2:])
    su = strong_view(xu, unlabeled["volume_min"], unlabeled["volume_max"], generator, "paper",
                     unlabeled.get("valid"))
    ones = torch.ones((nl,) + spatial, device=xl.device)

    out_w, att_w = run.forward(torch.cat([xl, xu]), attention=True)
    conf, pseudo = torch.softmax(out_w.detach(), dim=1).max(dim=1)
    l_sup = mask_dice_loss(out_w[:nl], yl, ones)

    mask = smc_mask(nu, spatial, generator, config.smc_block, config.smc_ratio, su.device)
    out_s = run.forward(su * mask)
    l_smc = smc_loss_paper(out_s, pseudo[nl:], conf[nl:], config.paper_tau)

    box = agr_box_mask(att_w[nl:], generator, "paper", spatial, alpha=config.paper_alpha)
    xl_pair, yl_pair = _pair(xl, nu), _pair(yl, nu)
    x_mix = xl_pair * box + xu * (1.0 - box)
    inside = box[:, 0] > 0.5
    y_mix = torch.where(inside, yl_pair, pseudo[nl:])
    out_mix = run.forward(x_mix)
    l_agr = mask_dice_loss(out_mix, y_mix, torch.ones_like(box[:, 0]))

    loss = l_sup + config.lambda_smc * l_smc + config.lambda_agr * l_agr
    terms = {"total": loss, "dice": l_sup, "smc": l_smc, "agr": l_agr, "box_fraction": box.mean()}
    return StepResult(loss, {k: v.detach() for k, v in terms.items()})


__all__ = ["RECIPES", "RecipeConfig", "StepResult", "make_thresholds", "training_step"]
