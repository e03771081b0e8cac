"""CSE pieces against the authors' code_cse (train_cse_withval.py and its helpers): AGR boxes/probabilities,
SMC masks and thresholds, losses against hand-computed values, pseudo-labels, schedule, and one training step per recipe/model/K."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from lightunetr_core.training import agr, losses, pseudo_labels, schedule, smc, views
from lightunetr_core.training.recipes import RecipeConfig, make_thresholds, training_step

torch.set_num_threads(1)


# ---------------------------------------------------------------- AGR (utils/BCP_utils.py soft_attention_mask)
def test_reference_candidates_la_and_96():
    c = agr.reference_candidates((112, 112, 80))
    assert c.starts == ((0, 19, 38), (0, 19, 38), (0, 13, 26))
    assert [e[0] - s[0] for s, e in zip(c.starts, c.ends)] == [74, 74, 53]
    assert c.count == 27
    assert abs(74 * 74 * 53 / (112 * 112 * 80) - 0.289) < 1e-3
    c96 = agr.reference_candidates((96, 96, 96))
    assert c96.starts == ((0, 16, 32),) * 3 and c96.ends[0] == (64, 80, 96)


def test_paper_candidates_grid():
    c = agr.paper_candidates((112, 112, 80), alpha=1.5)
    assert c.starts == ((0, 74), (0, 74), (0, 53))
    assert c.ends == ((74, 112), (74, 112), (53, 80))
    c = agr.paper_candidates((96, 96, 96), alpha=3.0)  # P = 32, N = 3, non-overlapping
    assert c.starts[0] == (0, 32, 64) and c.ends[0] == (32, 64, 96)


def test_box_sums_match_brute_force():
    g = torch.Generator().manual_seed(0)
    att = torch.rand(2, 30, 27, 21, generator=g)
    c = agr.reference_candidates((30, 27, 21))
    sums = c.box_sums(att)
    n = 0
    for i in range(3):
        for j in range(3):
            for k in range(3):
                sl = tuple(slice(c.starts[a][t], c.ends[a][t]) for a, t in enumerate((i, j, k)))
                expected = att[(slice(None),) + sl].double().sum((1, 2, 3))
                assert torch.allclose(sums[:, n], expected)
                n += 1


def test_reference_probabilities_spec_numbers():
    size = (112, 112, 80)
    c = agr.reference_candidates(size)
    uniform = agr.reference_probabilities(torch.ones(2, 1, *size), c)
    assert torch.allclose(uniform, torch.full((27,), 1 / 27))
    # Attention only in the corner covered by candidate (2,2,2) alone: 26 ties at the minimum.
    att = torch.zeros(2, 1, *size)
    att[:, :, 93:, 93:, 66:] = 1.0
    p = agr.reference_probabilities(att, c)
    assert int(p.argmax()) == 26
    assert p[26].item() == pytest.approx(math.e / (math.e + 26), rel=1e-5)  # 0.095 in the spec
    assert p[0].item() == pytest.approx(1 / (math.e + 26), rel=1e-5)
    # The score is summed over the whole unlabelled batch: mass in another sample changes it.
    att2 = att.clone()
    att2[1] = 0
    att2[1, :, :19, :19, :13] = 5.0  # only candidate (0,0,0)
    p2 = agr.reference_probabilities(att2, c)
    assert int(p2.argmax()) == 0


def test_reference_box_sampling_seeded_and_shared():
    size = (30, 30, 21)
    c = agr.reference_candidates(size)
    att = torch.zeros(2, 1, *size)
    att[:, :, c.ends[0][1]:, c.ends[1][1]:, c.ends[2][1]:] = 1.0  # only candidate 26
    a = agr.agr_box_mask(att, torch.Generator().manual_seed(5))
    b = agr.agr_box_mask(att, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(a[0], a[1])  # one box for the whole batch
    side = [e[0] - s[0] for s, e in zip(c.starts, c.ends)]
    assert a[0].sum().item() == math.prod(side)
    g = torch.Generator().manual_seed(0)
    hits = 0
    draws = 600
    corner = tuple(slice(c.starts[i][2], c.ends[i][2]) for i in range(3))
    for _ in range(draws):
        m = agr.agr_box_mask(att, g)
        hits += bool(m[(0, 0) + corner].all() and m[0, 0].sum() == math.prod(side))
    assert abs(hits / draws - math.e / (math.e + 26)) < 0.04  # ~3.3 sigma


def test_paper_box_one_per_image():
    size = (48, 48, 48)  # alpha 1.5 → P = 32, cells (0,32)
    att = torch.zeros(2, 1, *size)
    att[0, :, :32, :32, :32] = 1.0
    att[1, :, 32:, 32:, 32:] = 1.0
    m = agr.agr_box_mask(att, torch.Generator().manual_seed(0), "paper")
    assert m[0, 0, :32, :32, :32].all() and m[0].sum() == 32 ** 3
    assert m[1, 0, 32:, 32:, 32:].all() and m[1].sum() == 16 ** 3


# ---------------------------------------------------------------- SMC (dataloaders/masking.py)
def test_smc_mask_statistics_la():
    g = torch.Generator().manual_seed(0)
    assert smc.smc_grid_shape((112, 112, 80)) == (7, 7, 5)
    assert smc.smc_grid_shape((96, 96, 96)) == (6, 6, 6)
    m = smc.smc_mask(16, (112, 112, 80), g)
    assert m.shape == (16, 1, 112, 112, 80)
    assert m.min() >= 0 and m.max() <= 1
    assert 0.4 < m.mean().item() < 0.6
    zeros = (m == 0).float().mean().item()
    ones = (m == 1).float().mean().item()
    # Spec: ~4.6 % exactly 0 and ~3.9 % exactly 1 — mostly a smooth fractional field.
    assert 0.005 < zeros < 0.15 and 0.005 < ones < 0.15
    assert ((m > 0) & (m < 1)).float().mean().item() > 0.7
    again = smc.smc_mask(16, (112, 112, 80), torch.Generator().manual_seed(0))
    assert torch.equal(m, again)


def test_threshold_ema_update():
    th = smc.PatchThresholds(1, (32, 16, 16))
    assert th.tau.shape == (1, 2, 1, 1) and torch.all(th.tau == 0.8)
    conf = torch.full((1, 32, 16, 16), 0.9)
    conf[0, 16:, :8] = 0.7  # second patch: half 0.7, half 0.9
    keep = th.update(conf)
    assert keep[0, :16].all()
    assert keep[0, 16:, :8].sum() == 0 and keep[0, 16:, 8:].all()
    assert th.tau[0, 0, 0, 0].item() == pytest.approx(0.99 * 0.8 + 0.01 * 0.9)
    assert th.tau[0, 1, 0, 0].item() == pytest.approx(0.99 * 0.8 + 0.01 * 0.8)
    # Second update uses the *old* (updated-once) thresholds: 0.8 ≥ 0.8 kept in patch 1, not ≥ 0.801.
    conf2 = torch.full((1, 32, 16, 16), 0.8)
    keep2 = th.update(conf2)
    assert keep2[0, :16].sum() == 0 and keep2[0, 16:].all()
    state = th.state_dict()
    other = smc.PatchThresholds(1, (32, 16, 16))
    other.load_state_dict(state)
    assert torch.equal(other.tau, th.tau)


def test_smc_loss_reference_counts_ignored_as_zero():
    logits = torch.log(torch.tensor([[0.8, 0.3], [0.2, 0.7]])).reshape(1, 2, 2, 1, 1)
    target = torch.tensor([0, 1]).reshape(1, 2, 1, 1)
    keep = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    assert smc.smc_loss_reference(logits, target, keep).item() == pytest.approx(-math.log(0.8) / 2, rel=1e-5)


# ---------------------------------------------------------------- losses (utils/losses.py)
P = torch.tensor([[0.8, 0.3], [0.2, 0.7]])  # (K=2, voxels=2)
LOGITS = torch.log(P).reshape(1, 2, 2, 1, 1)
PROBS = P.reshape(1, 2, 2, 1, 1)
Y = torch.tensor([0, 1]).reshape(1, 2, 1, 1)


def test_dice_sq_hand_computed():
    expected = ((1 - 1.6 / 1.73) + (1 - 1.4 / 1.53)) / 2
    assert losses.dice_sq_loss(PROBS, Y).item() == pytest.approx(expected, rel=1e-6)


def test_mask_dice_hand_computed():
    mask = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    c0 = (2 * 0.8 + 1e-5) / (0.8 + 1.0 + 1e-5)
    c1 = (0 + 1e-5) / (0.2 + 0 + 1e-5)
    assert losses.mask_dice_loss(LOGITS, Y, mask).item() == pytest.approx(1 - (c0 + c1) / 2, rel=1e-5)


def test_masked_ce_and_mix_loss_hand_computed():
    inside = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    assert losses.masked_ce(LOGITS, Y, inside).item() == pytest.approx(-math.log(0.8), rel=1e-5)
    y_out = torch.tensor([1, 1]).reshape(1, 2, 1, 1)
    d_in = 1 - ((2 * 0.8 + 1e-5) / (1.8 + 1e-5) + 1e-5 / (0.2 + 1e-5)) / 2
    # outside = voxel 1 only: p = (0.3, 0.7), target class 1
    d_out = 1 - ((1e-5) / (0.3 + 1e-5) + (2 * 0.7 + 1e-5) / (1.7 + 1e-5)) / 2
    ce_in, ce_out = -math.log(0.8), -math.log(0.7)
    expected = 0.5 * ((d_in + 0.5 * d_out) + (ce_in + 0.5 * ce_out))
    assert losses.mix_loss(LOGITS, Y, y_out, inside).item() == pytest.approx(expected, rel=1e-5)


def test_losses_multiclass_shapes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, 8, generator=g)
    y = torch.randint(0, 4, (2, 8, 8, 8), generator=g)
    ce, dice = losses.supervised_loss(logits, y)
    perfect = losses.dice_sq_loss(losses.one_hot(y, 4), y)
    assert ce.item() > 0 and 0 < dice.item() < 1 and perfect.item() == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------- pseudo-labels
def test_binary_pseudo_label_lcc_26_connectivity_per_sample():
    probs = torch.zeros(2, 2, 10, 10, 10)
    probs[:, 0] = 1
    fg = torch.zeros(2, 10, 10, 10, dtype=torch.bool)
    fg[0, 0:2, 0:2, 0:2] = True  # 8 voxels
    fg[0, 2, 2, 2] = True  # diagonal neighbour → same component under 26-connectivity (9)
    fg[0, 5:7, 5:7, 6:9] = True  # 12 voxels → the largest
    fg[1, 0, 0:3, 0:3] = True  # sample 1 touches x = 0 where sample 0 touches x = 9 if not separated
    fg[0, 9, 0:2, 0:2] = True
    probs[:, 1] = fg.float()
    probs[:, 0] = 1 - fg.float()
    out = pseudo_labels.binary_pseudo_label(probs)
    assert out[0].sum() == 12 and out[0, 5:7, 5:7, 6:9].all()
    assert out[1].sum() == 9
    empty = pseudo_labels.binary_pseudo_label(torch.stack([torch.ones(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)], 1))
    assert empty.sum() == 0
    diag = torch.zeros(1, 2, 6, 6, 6)
    diag[0, 1, 0, 0, 0] = diag[0, 1, 1, 1, 1] = diag[0, 1, 2, 2, 2] = 1  # only corner-connected
    diag[0, 1, 4:6, 4:6, 5] = 1  # 4 voxels
    assert pseudo_labels.binary_pseudo_label(diag).sum() == 4
    diag[0, 1, 3, 3, 3] = 1  # the diagonal chain now has 4 + joins nothing else: tie → first in raster order
    out = pseudo_labels.binary_pseudo_label(diag)
    assert out.sum() == 4 and out[0, 0, 0, 0] == 1


def test_multiclass_pseudo_label_per_class_lcc():
    lab = torch.zeros(1, 12, 12, 12, dtype=torch.long)
    lab[0, 0:3, 0:3, 0:3] = 1  # 27
    lab[0, 8:10, 8:10, 8:10] = 1  # 8 → removed
    lab[0, 0:2, 6:8, 0:2] = 2  # 8 → removed
    lab[0, 5:8, 5:8, 0:2] = 2  # 18
    probs = torch.nn.functional.one_hot(lab, 3).movedim(-1, 1).float()
    out = pseudo_labels.multiclass_pseudo_label(probs)
    assert (out == 1).sum() == 27 and (out == 2).sum() == 18
    assert out[0, 8, 8, 8] == 0 and out[0, 0, 6, 0] == 0


def test_pseudo_label_keeps_every_part_of_a_two_part_class():
    """Class 1 is two kidneys (two parts in every labelled case), class 2 one organ with a speck of annotation
    noise: with --pseudo-label-components auto the AGR pseudo-label keeps both kidneys and still cleans class 2;
    'largest' is the reference rule for every class, 'all' keeps every part."""
    from lightunetr_core.training.pseudo_labels import largest_component_classes, single_structure_classes

    cases = []
    for shift in (0, 1):
        lab = np.zeros((20, 12, 12), dtype=np.uint8)
        lab[1 + shift:5 + shift, 2:6, 2:6] = 1  # left kidney
        lab[14:18, 2:6, 2:6] = 1  # right kidney
        lab[7:12, 6:11, 6:11] = 2  # one organ (125 voxels) ...
        lab[0, 11, 11] = 2  # ... and one speck (< 5 % of it)
        cases.append(lab)
    assert single_structure_classes(cases, 3) == (2,)
    assert largest_component_classes("auto", 3, cases) == (2,)
    assert largest_component_classes("largest", 3, cases) == (1, 2)
    assert largest_component_classes("all", 3, cases) == ()
    assert largest_component_classes("auto", 2, cases[:1]) == (1,)  # two classes: the reference's rule

    predicted = torch.from_numpy(cases[0].astype(np.int64))[None]
    predicted[0, 19, 0, 0] = 2  # a stray class-2 voxel in the prediction
    probs = torch.nn.functional.one_hot(predicted, 3).movedim(-1, 1).float()
    auto = pseudo_labels.agr_pseudo_label(probs, largest_component_classes("auto", 3, cases))
    assert (auto == 1).sum() == (predicted == 1).sum() == 128  # both kidneys survive
    assert auto[0, 19, 0, 0] == 0 and (auto == 2).sum() == 125  # the one-part class is still cleaned
    reference = pseudo_labels.agr_pseudo_label(probs, None)
    assert (reference == 1).sum() == 64  # the old rule: one kidney becomes background
    binary = torch.stack([1 - (predicted == 1).float(), (predicted == 1).float()], 1)
    assert (pseudo_labels.agr_pseudo_label(binary, ()) == 1).sum() == 128
    assert (pseudo_labels.agr_pseudo_label(binary, None) == 1).sum() == 64


# ---------------------------------------------------------------- views
def test_strong_view_reference_and_paper():
    g = torch.Generator().manual_seed(0)
    n = 64
    x = torch.linspace(-2, 2, 8 * 8 * 8).reshape(1, 1, 8, 8, 8).repeat(n, 1, 1, 1, 1)
    vmin, vmax = torch.full((n, 1), -4.0), torch.full((n, 1), 4.0)
    s = views.strong_view(x, vmin, vmax, g, "reference")
    unit = (x + 4) / 8
    # Without noise the sample is exactly unit ** gamma; recover gamma from two voxels.
    noisefree = []
    for i in range(n):
        gamma = math.log(s[i, 0, 0, 0, 1].item()) / math.log(unit[i, 0, 0, 0, 1].item())
        if torch.allclose(s[i], unit[i] ** gamma, atol=1e-5):
            noisefree.append(gamma)
    assert 15 < len(noisefree) < 50  # noise with p = 0.5
    assert all(0.7 <= gm <= 1.5 for gm in noisefree)
    p = views.strong_view(x, vmin, vmax, torch.Generator().manual_seed(0), "paper")
    assert p.min() >= -4 - 1e-5 and p.max() <= 4 + 1e-5
    assert torch.all(p[:, 0].flatten(1).diff(dim=1) >= -1e-6)  # monotone map of the input



@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_strong_view_keeps_zero_padding_at_zero(variant):
    # The reference augments the whole volume, then pads: padding is exactly 0, without γ or noise.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 1, 8, 8, 8)
    valid = torch.zeros(8, 8, 8, 8, dtype=torch.bool)
    valid[:, 2:6] = True
    x[:, :, ~valid[0]] = 0.0
    s = views.strong_view(x, torch.full((8, 1), -5.0), torch.full((8, 1), 5.0), g, variant, valid)
    assert torch.all(s[:, 0][~valid] == 0)
    assert torch.all(s[:, 0][valid] != 0)
    unmasked = views.strong_view(x, torch.full((8, 1), -5.0), torch.full((8, 1), 5.0),
                                 torch.Generator().manual_seed(3), variant)
    assert torch.any(unmasked[:, 0][~valid] != 0)  # min–max alone would move padding off 0


def test_every_recipe_samples_labelled_crops_alike_by_default():
    """One foreground oversampling for every recipe, so that a CSE-vs-supervised comparison run with the defaults
    differs in the method only; the authors' uniform crops (0) by option."""
    from lightunetr_core.cli.train import register, request_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base = ["train", "--data", "d.json", "-o", "run"]

    def oversample(*extra):
        return request_from_args(parser.parse_args(base + list(extra)))[0].effective_foreground_oversample

    assert oversample() == oversample("--recipe", "supervised") == oversample("--recipe", "cse-paper") == 0.33
    assert oversample("--foreground-oversample", "0") == 0.0
    assert oversample("--foreground-oversample", "0.5") == 0.5


def test_warmup_scales_with_short_runs():
    """The reference's 500 warm-up iterations, but never more than a tenth of the run: with 1,000 iterations the
    peak learning rate is reached after 100, with 300 after 30 (before: 500 whatever the run's length)."""
    from lightunetr_core.cli.train import register, request_from_args
    from lightunetr_core.training.request import TrainingRequest

    assert TrainingRequest("d", "r").effective_warmup == 500  # 15,000 iterations: the reference
    assert TrainingRequest("d", "r", iterations=1000).effective_warmup == 100
    assert TrainingRequest("d", "r", iterations=300).effective_warmup == 30
    assert TrainingRequest("d", "r", iterations=5).effective_warmup == 1
    assert TrainingRequest("d", "r", iterations=300, warmup=200).effective_warmup == 200
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert "a tenth" in parser._subparsers._group_actions[0].choices["train"].format_help()
    request = request_from_args(parser.parse_args(["train", "--data", "d", "-o", "r", "--iterations", "1000"]))[0]
    lrs = [schedule.lr_after(t, request.effective_lr, request.iterations, request.effective_warmup)
           for t in range(1, 1001)]
    assert max(lrs) == pytest.approx(0.01) and lrs.index(max(lrs)) == 99


def test_training_request_round_trips_through_the_command_line(tmp_path):
    """The request the Slicer job and the demo build is what the command line parses back, and a bad request
    names each option to change."""
    from lightunetr_core.cli.train import register, request_from_args
    from lightunetr_core.training.request import TrainingRequest
    from lightunetr_core.vocabulary import InputError

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for request in [
        TrainingRequest("m.json", "run"),
        TrainingRequest("m.json", "run", recipe="supervised", iterations=30, patch_size=(32, 32, 16), lr=0.02,
                        warmup=3, val_stride=(16, 16, 8), foreground_oversample=0.0, pseudo_label_components="all",
                        lean=False, bf16=True, resume=True, init_bundle="b.lightunetr", name="N", threads=2, fold=1),
    ]:
        back, _ = request_from_args(parser.parse_args(["train", *request.to_cli_args()]))
        assert back == request
    assert TrainingRequest("m", "r", resume=True).to_cli_args()[-1] == "--resume"
    bad = TrainingRequest("m", "r", patch_size=(30, 32, 32), iterations=0, recipe="cse-paper", lean=True,
                          val_stride=(64, 8, 8), pseudo_label_components="some")
    with pytest.raises(InputError) as info:
        bad.check()
    for words in ("--patch-size", "--iterations", "--lean", "--val-stride", "--pseudo-label-components"):
        assert words in str(info.value)
    assert TrainingRequest("m", "r", patch_size=(64, 64, 32), val_stride=(16, 16, 8)).validation_overlap == (0.75, 0.75, 0.75)


# ---------------------------------------------------------------- schedule
def test_schedule_values():
    assert schedule.lr_after(1) == pytest.approx(0.01 / 500)
    assert schedule.lr_after(499) == pytest.approx(0.01 * 499 / 500)
    assert schedule.lr_after(500) == pytest.approx(0.01)
    assert schedule.lr_after(7750) == pytest.approx(0.005)
    assert schedule.lr_after(15000) == pytest.approx(0.0, abs=1e-12)
    model = torch.nn.Linear(2, 2)
    opt = schedule.build_optimizer(model.parameters())
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 1e-4
    sched = schedule.WarmupCosine(opt, 0.01, 15000)
    assert sched.lr == 0.01  # the first step runs at the full lr
    assert sched.step() == pytest.approx(2e-5)


# ---------------------------------------------------------------- one step
PATCH = (32, 32, 32)


def _batch(k: int, nl: int = 2, nu: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lab = {"image": torch.randn(nl, 1, *PATCH, generator=g), "label": torch.randint(0, k, (nl, *PATCH), generator=g)}
    unl = {"image": torch.randn(nu, 1, *PATCH, generator=g), "volume_min": torch.full((nu, 1), -4.0),
           "volume_max": torch.full((nu, 1), 4.0)}
    return lab, unl


class _PassRecorder:
    def __init__(self, model):
        self.calls = []
        model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        x = args[0]
        self.calls.append({"batch": x.shape[0], "grad": torch.is_grad_enabled(), "input": x.detach().clone(),
                           "train": module.training})


def test_reference_step_runs_four_passes_exactly():
    from lightunetr_core.models import LightUNETR

    torch.manual_seed(0)
    model = LightUNETR(1, 2, patch_size=PATCH).train()
    rec = _PassRecorder(model)
    lab, unl = _batch(2)
    cfg = RecipeConfig("reference")
    th = make_thresholds(cfg, 2, PATCH)
    result = training_step(model, lab, unl, cfg, th, torch.Generator().manual_seed(1))
    result.loss.backward()
    assert [c["batch"] for c in rec.calls] == [4, 4, 2, 2]
    assert [c["grad"] for c in rec.calls] == [True, True, False, True]
    assert all(c["train"] for c in rec.calls)
    assert torch.equal(rec.calls[0]["input"], torch.cat([lab["image"], unl["image"]]))
    assert rec.calls[1]["input"][:2].abs().sum() == 0  # zero-filled labelled half of the strong batch
    assert torch.equal(rec.calls[2]["input"], unl["image"])
    mix = rec.calls[3]["input"]
    inside = (mix == lab["image"]) & (mix != unl["image"])
    assert 0.2 < inside.float().mean().item() < 0.35  # the 2/3-side box ≈ 29.6 % of the volume
    terms = result.terms
    total = terms["ce"] + terms["dice"] + 1.0 * terms["smc"] + 4.0 * terms["agr"]
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-6)
    assert th.tau.shape == (2, 2, 2, 2) and not torch.all(th.tau == 0.8)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_lean_step_three_passes():
    from lightunetr_core.models import LightUNETR

    torch.manual_seed(0)
    model = LightUNETR(1, 2, patch_size=PATCH).train()
    rec = _PassRecorder(model)
    lab, unl = _batch(2)
    cfg = RecipeConfig("reference", lean=True)
    result = training_step(model, lab, unl, cfg, make_thresholds(cfg, 2, PATCH), torch.Generator().manual_seed(1))
    result.loss.backward()
    assert [c["batch"] for c in rec.calls] == [4, 2, 2]
    assert all(c["grad"] for c in rec.calls)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("recipe", ["reference", "paper", "supervised"])
def test_step_lightunetr_k_classes(k, recipe):
    from lightunetr_core.models import LightUNETR

    torch.manual_seed(0)
    model = LightUNETR(1, k, patch_size=PATCH).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    lab, unl = _batch(k)
    cfg = RecipeConfig(recipe)
    th = make_thresholds(cfg, 2, PATCH)
    before = [p.detach().clone() for p in model.parameters()]
    result = training_step(model, lab, unl, cfg, th, torch.Generator().manual_seed(1))
    assert torch.isfinite(result.loss)
    result.loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_step_lightunetr_large_with_attention():
    from lightunetr_core.models import LightUNETRLarge

    torch.manual_seed(0)
    model = LightUNETRLarge(1, 3, channels=(12, 24, 48, 60, 96)).train()
    lab, unl = _batch(3, nl=1, nu=2)  # labelled sample i % 1 is paired with every unlabelled one
    for recipe, lean in [("reference", False), ("paper", False)]:
        cfg = RecipeConfig(recipe, lean=lean)
        result = training_step(model, lab, unl, cfg, make_thresholds(cfg, 2, PATCH), torch.Generator().manual_seed(1))
        assert torch.isfinite(result.loss)
        result.loss.backward()
        model.zero_grad()


def test_bf16_step_runs():
    from lightunetr_core.models import LightUNETR

    torch.manual_seed(0)
    model = LightUNETR(1, 2, patch_size=PATCH).train()
    lab, unl = _batch(2)
    cfg = RecipeConfig("reference", lean=True, bf16=True)
    result = training_step(model, lab, unl, cfg, make_thresholds(cfg, 2, PATCH), torch.Generator().manual_seed(1))
    assert torch.isfinite(result.loss) and result.loss.dtype == torch.float32
