"""Qt-free logic of the LightUNETRTraining module (tested with pytest against a real slicer-core scene).

``cases``     the case table: volumes → rows (role labeled/unlabeled/validation/ignore, segmentation,
              classes from segment names) and the checks before a run, per row
``config``    :class:`TrainingConfig` and its ``lightunetr train`` arguments
``startfrom`` "Start from": random weights, a library model or a catalog model, and what it fixes
``export``    cases → job folder (.nrrd volumes, label maps with consistent class values, dataset.json)
``plot``      live loss / validation-Dice curves as MRML table + plot series + plot chart nodes
``logic``     :class:`TrainingLogic` / :class:`TrainingJob`: (download the model to start from,) start, stop
              (checkpoint), resume, reopen a run after a restart, register the bundle, segment the
              unlabelled cases, uncertainty ranking, stop on scene close

Uses LightUNETRSlicerLib (volume export, segment import, model library, environment check), the engine's job
runner (lightunetr_core.jobs.runner) and the Segmentation module's logic (to segment the unlabelled cases).
Its test scenarios are in LightUNETRScenarios.training.
"""
