"""CSE semi-supervised training (the authors' code_cse/train_cse_withval.py): views, SMC, AGR, losses, recipes, schedule, checkpoints,
the trainer loop and distributed helpers. See docs/training.md.

The recipe names below are imported on first use (PEP 562), so that the torch-free modules of this package
(``runlog``: a run folder's events and logs) can be read by the Slicer modules without importing torch.
"""

__all__ = ["RECIPES", "RecipeConfig", "StepResult", "make_thresholds", "training_step"]


def __getattr__(name):
    if name in __all__:
        from lightunetr_core.training import recipes

        return getattr(recipes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
