"""CSE semi-supervised training (spec §3): views, SMC, AGR, losses, recipes, schedule, checkpoints,
the trainer loop and distributed helpers. See docs/training.md.

Heavy modules are imported lazily by the CLI; importing this package pulls in torch only.
"""

from lightunetr_core.training.recipes import RECIPES, RecipeConfig, StepResult, make_thresholds, training_step

__all__ = ["RECIPES", "RecipeConfig", "StepResult", "make_thresholds", "training_step"]
