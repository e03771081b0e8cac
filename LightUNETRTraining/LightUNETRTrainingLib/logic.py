"""Training logic (Qt-free): case table → export → ``lightunetr train`` subprocess (events, live plot,
stop with checkpoint, resume) → register the bundle in the segmentation module's model library →
segment the unlabelled cases → optional ranking of those cases by mean uncertainty.

Console API (inside Slicer: ``logic = slicer.util.getModuleLogic("LightUNETRTraining")``)::

    table = logic.setup(labeledPairs=[(vol1, seg1), (vol2, seg2)], unlabeledVolumes=[vol3, vol4],
                        config={"name": "Liver", "iterations": 500, "patch_size": (96, 96, 96)})
    table.ok, table.report()                       # problems, per case
    job = logic.start(table, config)               # returns at once; job.poll() from a timer
    job = logic.run([(vol1, seg1)], [vol3], config, waitForCompletion=True)   # blocking
    job.iteration, job.it_per_s, job.eta_s, job.loss, job.dice, job.status, job.message
    job.stop(); job.resume()                       # checkpoint + continue
    job.model, job.results, job.ranking            # after it finished

Every callback (``on_progress(job, event)``, ``on_validation(job, event)``, ``on_event(job, event)``,
``on_finished(job)``) and every scene change happens on the thread that calls ``job.poll()``.
Closing the scene stops a running job cleanly (checkpoint written, process ended) before the nodes go.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time

import slicer

from lightunetr_core.jobs import runner as jobrunner
from LightUNETRSlicerLib.models import BUNDLE_SUFFIX

from .cases import CaseTable
from . import startfrom
from .config import TrainingConfig, as_config
from .export import CaseExport, ExportError
from .plot import TrainingPlot

logger = logging.getLogger("LightUNETR")

PENDING, DOWNLOADING, EXPORTING, RUNNING = "pending", "downloading", "exporting", "running"
STOPPING, STOPPED, SEGMENTING = "stopping", "stopped", "segmenting"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
FINAL = (STOPPED, COMPLETED, FAILED, CANCELLED)
CHECKPOINT_NAME = "checkpoint.pt"
#: In every job folder: what is needed to resume the run after Slicer restarts (TrainingLogic.openRun).
JOB_FILE = "job.json"
JOB_FORMAT = 1


class RunFolderError(ValueError):
    """A folder is not a training run this module can resume; the message says why."""


def default_jobs_folder() -> str:
    return os.environ.get("LIGHTUNETR_TRAINING_DIR") or os.path.join(os.path.expanduser("~"), ".lightunetr", "training")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


class TrainingJob:
    """One training run and what follows it. ``status``: pending → (downloading: the catalog model to start
    from) → exporting (one case per ``poll()``) → running → (stopping → stopped → running ...) → segmenting →
    completed, or failed / cancelled.

    ``detached`` (set when the scene closes): the job no longer touches the scene: a stop writes its
    checkpoint and the process ends on its own, a finished training is registered in the model library,
    but nothing is segmented or plotted."""

    def __init__(self, logic, table: CaseTable, config: TrainingConfig, jobFolder: str | None, callbacks: dict):
        self.logic = logic
        self.table = table
        self.config = config
        self.folder = jobFolder
        self.callbacks = callbacks
        self.status = PENDING
        self.message = ""
        self.manifest: str | None = None
        self.runDir: str | None = None
        self.runner: jobrunner.JobRunner | None = None
        self.runners: list = []
        self.plot: TrainingPlot | None = None
        self.modelName = config.name
        # live state
        self.stage = ""
        self.iteration = 0
        self.total = int(config.iterations)
        self.it_per_s: float | None = None
        self.eta_s: float | None = None
        self.loss: dict = {}
        self.lr: float | None = None
        self.dice: float | None = None
        self.per_class_dice: dict = {}
        self.best_dice: float | None = None
        self.loss_history: list = []  # (iteration, {term: value})
        self.dice_history: list = []  # (iteration, dice)
        self.checkpoint: str | None = None
        # results
        self.bundlePath: str | None = None
        self.model = None  # LightUNETRSlicerLib.models.ModelInfo once registered
        self.queue = None
        self.results: list = []  # per unlabelled case: volume, segmentation, uncertainty, meanUncertainty, ok, message
        self.ranking: list = []  # results with an uncertainty, most uncertain first
        self.export: CaseExport | None = None
        self.download = None  # LightUNETRSlicerLib.modelinstall.ModelInstallJob of a catalog start-from
        self.detached = False
        self._stop_requested = False

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return self.status in FINAL

    @property
    def ok(self) -> bool:
        return self.status == COMPLETED

    @property
    def resumable(self) -> bool:
        """A checkpoint exists: a resume continues from it (else the run starts anew in its folder)."""
        return bool(self.runDir) and os.path.isfile(os.path.join(self.runDir, CHECKPOINT_NAME))

    @property
    def canResume(self) -> bool:
        """Stopped or cancelled after its cases were exported (a run cancelled earlier has nothing to go on)."""
        return self.status in (STOPPED, CANCELLED) and bool(self.manifest)

    @property
    def progress(self) -> float:
        if self.status == COMPLETED:
            return 1.0
        return min(1.0, self.iteration / self.total) if self.total else 0.0

    @property
    def events(self) -> list:
        return [e for r in self.runners for e in r.events]

    @property
    def log(self) -> list:
        return [line for r in self.runners for line in r.log_lines]

    def __repr__(self):
        return f"<TrainingJob {self.status} it {self.iteration}/{self.total} {self.message!r}>"

    def _call(self, name, *args):
        cb = self.callbacks.get(name)
        if cb is not None:
            try:
                cb(self, *args)
            except Exception:  # a GUI callback must not break the job
                logger.exception("LightUNETR training: %s callback failed", name)

    def _finish(self, status: str, message: str) -> None:
        if status == COMPLETED and self.model is not None and self.config.register_model \
                and not self.config.keep_case_data:
            message += self._remove_case_copies()
        self.status = status
        self.message = message
        (logger.error if status == FAILED else logger.info)("LightUNETR training: %s", message)
        if self in self.logic.activeJobs and self.done:
            self.logic.activeJobs.remove(self)
        self._call("on_finished")

    # ------------------------------------------------------------------ start
    def start(self) -> "TrainingJob":
        if not self.table.check(self.config):
            self._finish(FAILED, "Training cannot start:\n" + self.table.report())
            return self
        self.modelName = self.logic.uniqueModelName(self.config.name)
        if self.folder is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.folder = os.path.join(self.logic.jobsFolder, f"{_safe(self.modelName)}-{stamp}")
        self.logic.activeJobs.append(self)
        name = startfrom.catalog_name(self.config.init_bundle)
        if name is not None:
            from LightUNETRSlicerLib import modelinstall

            seg_logic = self.logic.segmentationLogic
            installed = modelinstall.installed_catalog_models(seg_logic.library).get(name)
            if installed is not None:
                self.config = dataclasses.replace(self.config, init_bundle=installed.path)
            else:
                self.download = seg_logic.downloadModel(name)
                self.status = DOWNLOADING
                self.stage = "download"
                self.message = self.download.message or f"Downloading {name} to start from..."
                if self.download.done:
                    self._download_finished()
                return self
        self._start_export()
        return self

    def _download_finished(self) -> None:
        job = self.download
        if not job.ok:
            self._finish(CANCELLED if job.status == "cancelled" else FAILED,
                         f"Training did not start: {job.message}")
            return
        self.config = dataclasses.replace(self.config, init_bundle=job.model.path)
        self._start_export()

    def _start_export(self) -> None:
        try:
            self.export = CaseExport(self.table, self.folder, self.config, name=self.modelName).start()
        except (ExportError, OSError) as exc:
            self._finish(FAILED, f"Could not export the training cases: {exc}")
            return
        self.status = EXPORTING
        self.stage = "export"
        self.message = f"Exporting {self.export.total} case(s)..."

    def _export_step(self) -> None:
        """Export one case; launch training after the last one."""
        try:
            finished = self.export.step()
        except (ExportError, OSError) as exc:
            self._finish(FAILED, f"Could not export the training cases: {exc}")
            return
        if not finished:
            self.message = f"Exporting case {self.export.done_count}/{self.export.total}..."
            return
        self.manifest = self.export.result.manifest
        self.runDir = os.path.join(self.folder, "run")
        try:
            self._write_job_file()
        except OSError as exc:
            self._finish(FAILED, f"Could not write {JOB_FILE} in {self.folder}: {exc}")
            return
        if self.config.plot and not self.detached:
            scene = self.table.rows[0].volume.GetScene() if self.table.rows else slicer.mrmlScene
            self.plot = TrainingPlot(scene, self.modelName)
        self._launch(resume=False)

    def _restore_history(self) -> None:
        """Iteration, losses and Dice of an earlier run from its ``events.jsonl`` (lightunetr_core/training/runlog.py)."""
        from lightunetr_core.training.runlog import RunLogError, history, read_events

        try:
            events = read_events(self.runDir)
        except RunLogError:
            return
        iterations, validations = history(events)
        started = [e for e in events if e.get("event") == "started" and e.get("total")]
        if started:
            self.total = int(started[-1]["total"])
        terms = ("total", "ce", "dice", "smc", "agr")
        self.loss_history = [(r["iteration"], {k: r[k] for k in terms if r.get(k) is not None}) for r in iterations]
        if iterations:
            self.iteration = iterations[-1]["iteration"]
            self.loss = dict(self.loss_history[-1][1])
        self.dice_history = [(r["iteration"], r.get("dice")) for r in validations]
        dices = [d for _, d in self.dice_history if d is not None]
        if dices:
            self.dice, self.best_dice = self.dice_history[-1][1], max(dices)

    def _write_job_file(self) -> None:
        """What :meth:`TrainingLogic.openRun` needs to resume this run after Slicer restarts (atomic)."""
        import json

        data = {"format": JOB_FORMAT, "model_name": self.modelName, "config": self.config.to_dict(),
                "manifest": os.path.relpath(self.manifest, self.folder), "run_dir": os.path.relpath(self.runDir, self.folder)}
        path = os.path.join(self.folder, JOB_FILE)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)

    def _launch(self, resume: bool) -> None:
        config = self.config
        if self.modelName != config.name:
            config = TrainingConfig.from_dict({**config.to_dict(), "name": self.modelName})
        cmd = jobrunner.core_command("train", *config.train_args(self.manifest, self.runDir, resume=resume),
                                     python=self.logic.python)
        env = jobrunner.job_environment(self.logic.extraEnvironment, cpu_only=(config.device == "cpu"))
        runner = jobrunner.JobRunner(cmd, env=env, on_event=self._on_event, on_finished=self._on_runner_finished,
                                     grace_s=self.logic.stopGraceSeconds, name="train")
        self._stop_requested = False
        try:
            runner.start()
        except OSError as exc:
            self._finish(FAILED, f"Could not start the training process ({exc}); check the Python executable {cmd[0]}.")
            return
        self.runner = runner
        self.runners.append(runner)
        self.status = RUNNING
        self.message = "Resuming..." if resume else "Starting..."

    # ------------------------------------------------------------------ events
    def _on_event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "stage":
            self.stage = ev.get("stage") or ""
            self.message = ev.get("message") or self.stage
        elif kind == "started":
            self.total = int(ev.get("total") or self.total)
            self.iteration = int(ev.get("start_iteration") or 0)
            self.stage = "train"
            self.message = f"Training on {ev.get('device', '?')}"
        elif kind == "progress" and ev.get("iteration") is not None:
            self.iteration = int(ev["iteration"])
            self.total = int(ev.get("total") or self.total)
            self.it_per_s = ev.get("it_per_s", ev.get("rate"))
            self.eta_s = ev.get("eta_s")
            self.loss = dict(ev.get("loss") or {})
            self.lr = ev.get("lr")
            self.loss_history.append((self.iteration, dict(self.loss)))
            if self.plot is not None:
                self.plot.add_progress(self.iteration, self.loss)
            self._call("on_progress", ev)
        elif kind == "progress":  # preprocessing progress
            self.stage = ev.get("stage") or self.stage
            self.message = f"{self.stage}: {ev.get('case', '')} ({ev.get('done')}/{ev.get('total')})"
        elif kind == "validation":
            self.dice = ev.get("dice")
            self.per_class_dice = dict(ev.get("per_class") or {})
            self.best_dice = ev.get("best_dice", self.best_dice)
            self.dice_history.append((ev.get("iteration"), self.dice))
            if self.plot is not None:
                self.plot.add_validation(ev.get("iteration"), self.dice)
            self._call("on_validation", ev)
        elif kind == "checkpoint" and ev.get("kind", "resume") == "resume":
            self.checkpoint = ev.get("path")
        elif kind == "cancelled":
            self.checkpoint = ev.get("checkpoint") or self.checkpoint
        elif kind == "output" and ev.get("kind") == "bundle":
            self.bundlePath = ev.get("path")
        self._call("on_event", ev)

    def _on_runner_finished(self, runner: jobrunner.JobRunner) -> None:
        if runner.status == jobrunner.CANCELLED:
            if self.resumable:
                self._finish(STOPPED, f"Stopped at iteration {self.iteration}/{self.total}; checkpoint saved. "
                                      "Resume continues from there.")
            else:
                self._finish(CANCELLED, "Training stopped before the first checkpoint; starting again begins anew.")
            return
        if runner.status != jobrunner.COMPLETED:
            self._finish(FAILED, f"Training failed: {runner.error_message or 'unknown error'}")
            return
        bundle = self.bundlePath or next(iter(runner.output_paths("bundle")), None)
        if not bundle:
            self._finish(FAILED, "Training finished without writing a model bundle; see the log.")
            return
        self.bundlePath = bundle
        self._after_training()

    # ------------------------------------------------------------------ after training
    def _after_training(self) -> None:
        seg_logic = self.logic.segmentationLogic
        try:
            if not self.detached:
                apply_segment_appearance(self.bundlePath, self.table)
        except (OSError, ValueError) as exc:  # cosmetic: keep the engine's default colours
            logger.warning("LightUNETR training: could not copy segment colours into the model card: %s", exc)
        try:
            if self.config.register_model:
                self.model = seg_logic.addModelFromFile(self.bundlePath)
            else:
                self.model = seg_logic.resolveModel(self.bundlePath)
        except Exception as exc:  # ModelError, OSError: the bundle stays in the run folder
            self._finish(FAILED, f"Training finished but the model could not be registered: {exc} "
                                 f"(bundle: {self.bundlePath})")
            return
        volumes = [] if self.detached else [r.volume for r in self.table.by_role("unlabeled")
                                            if r.volume.GetScene() is not None]
        if not (self.config.segment_unlabeled or self.config.rank_uncertainty) or not volumes:
            self._finish(COMPLETED, self._summary())
            return
        self.status = SEGMENTING
        self.stage = "segment"
        self.message = f"Segmenting {len(volumes)} unlabelled case(s) with {self.model.name}..."
        self.queue = seg_logic.processQueue(volumes, self.model.path, device=self.config.inference_device,
                                            uncertainty=bool(self.config.rank_uncertainty))
        self._poll_queue()

    def _poll_queue(self) -> None:
        if self.queue.poll():
            return
        import numpy as np

        self.results = []
        for j in self.queue.jobs:  # the segmentation logic marked its nodes as generated (needs review)
            mean = None
            if j.ok and j.uncertaintyNode is not None:
                mean = float(np.mean(slicer.util.arrayFromVolume(j.uncertaintyNode)))
            score = (j.review or {}).get("score") if j.ok else None
            self.results.append({"volume": j.inputVolumeNodes[0], "segmentation": j.segmentationNode if j.ok else None,
                                 "uncertainty": j.uncertaintyNode, "meanUncertainty": mean, "reviewScore": score,
                                 "review": j.review, "ok": j.ok, "message": j.message})
        self.ranking = rank_by_uncertainty(self.results)
        failed = [r for r in self.results if not r["ok"]]
        msg = self._summary()
        if failed:
            msg += f" {len(failed)} unlabelled case(s) were not segmented: " + "; ".join(r["message"] for r in failed)
        self._finish(COMPLETED, msg)

    def _remove_case_copies(self) -> str:
        """Delete the job folder's copies of the cases and their preprocessed cache (patient data); the
        registered model, the checkpoints and the logs stay. Returns a sentence for the message."""
        folders = [os.path.join(self.folder, "data")] if self.folder else []
        folders += [os.path.join(self.runDir, "cache")] if self.runDir else []
        removed = [f for f in folders if os.path.isdir(f)]
        for folder in removed:
            shutil.rmtree(folder, ignore_errors=True)
        left = [f for f in removed if os.path.exists(f)]
        if left:
            logger.warning("LightUNETR training: could not delete %s", left)
            return f" Could not delete the case copies in {', '.join(left)}; delete them by hand."
        return " The exported case copies were deleted." if removed else ""

    def _summary(self) -> str:
        parts = [f"Training finished ({self.iteration} iterations)."]
        if self.best_dice is not None:
            parts.append(f"Best validation Dice {self.best_dice:.3f}.")
        if self.model is not None:
            parts.append(f"Model '{self.model.name}' is in the segmentation module's model list.")
        if self.results:
            parts.append(f"{sum(r['ok'] for r in self.results)} unlabelled case(s) segmented.")
        return " ".join(parts)

    # ------------------------------------------------------------------ control
    def poll(self) -> bool:
        """Handle new output; True while something is still running."""
        if self.status == DOWNLOADING:
            if not self.download.poll():
                self._download_finished()
            else:
                self.message = self.download.message
        elif self.status == EXPORTING:
            self._export_step()
        elif self.status in (RUNNING, STOPPING) and self.runner is not None:
            self.runner.poll()
        elif self.status == SEGMENTING and self.queue is not None:
            self._poll_queue()
        return not self.done

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> str:
        jobrunner.poll_until_done(self.poll, timeout, f"training ({self.status})", interval)
        return self.status

    def stop(self, block: bool = False) -> None:
        """Stop training at the next safe point: the engine writes its checkpoint and exits (the process
        tree is terminated if it does not within the grace time). During the segmentation of the
        unlabelled cases, stops that instead (the trained model stays registered)."""
        if self.status in (RUNNING, STOPPING) and self.runner is not None:
            self.status = STOPPING
            self.message = "Stopping (writing a checkpoint)..."
            self.runner.cancel(block=block)
            if block:
                self.wait(timeout=60)
        elif self.status == SEGMENTING and self.queue is not None:
            self.queue.cancel()
            if block:
                self.wait(timeout=60)
        elif self.status == DOWNLOADING:
            self.download.cancel()
            if block:
                self.wait(timeout=60)
        elif self.status == EXPORTING:
            self.export.abort()
            self._finish(CANCELLED, "Training cancelled during the export of the cases; nothing was kept.")
        elif self.status == PENDING:
            self._finish(CANCELLED, "Training cancelled before it started.")

    def resume(self) -> "TrainingJob":
        """Continue a stopped run from its checkpoint (a run stopped before its first checkpoint
        starts anew in the same folder)."""
        if not self.canResume:
            raise RuntimeError(f"only a stopped training can be resumed (this one is {self.status}).")
        if self not in self.logic.activeJobs:
            self.logic.activeJobs.append(self)
        if self.plot is None and self.config.plot and not self.detached and not self.table.rows:
            self.plot = TrainingPlot(slicer.mrmlScene, self.modelName)  # a run opened after a restart
            for iteration, loss in self.loss_history:
                self.plot.add_progress(iteration, loss)
            for iteration, dice in self.dice_history:
                self.plot.add_validation(iteration, dice)
        self._launch(resume=self.resumable)
        return self

    def kill(self) -> None:
        if self.download is not None and not self.download.done:
            self.download.kill()
        if self.export is not None and self.status == EXPORTING:
            self.export.abort()
        if self.runner is not None:
            self.runner.kill(wait_s=5.0)
        if self.queue is not None:
            self.queue.cancel()
            for j in self.queue.jobs:
                j.kill()

    def detach(self) -> None:
        """Forget the scene (it is closing): stop without waiting, drop the plot, touch no node again."""
        self.detached = True
        self.plot = None
        if self.status == SEGMENTING and self.queue is not None:
            self.queue.cancel()
            for j in self.queue.jobs:
                j.kill()
            self._finish(COMPLETED, self._summary() + " The scene was closed before the unlabelled cases were segmented.")
            return
        self.stop()


class TrainingLogic:
    """Qt-free logic; the module's ``LightUNETRTrainingLogic`` is a thin subclass of this.

    Args:
        segmentationLogic: the segmentation logic whose model library and queue are used; default: the
            session's shared one (:func:`LightUNETRSegmentationLib.logic.shared_logic`).
        jobsFolder: where job folders (exported data + run folder) are created.
    """

    def __init__(self, segmentationLogic=None, jobsFolder: str | None = None, python: str | None = None, scene=None):
        self._segmentationLogic = segmentationLogic
        self.jobsFolder = jobsFolder or default_jobs_folder()
        self.python = python
        self.extraEnvironment: dict = {}
        self.stopGraceSeconds = 30.0  # time the engine gets to write its checkpoint before being terminated
        self.activeJobs: list[TrainingJob] = []
        self.lastJob: TrainingJob | None = None
        self._scene = None
        self._observations: list = []
        self.observeScene(scene or slicer.mrmlScene)

    @property
    def segmentationLogic(self):
        if self._segmentationLogic is None:
            from LightUNETRSegmentationLib.logic import shared_logic

            self._segmentationLogic = shared_logic()
        return self._segmentationLogic

    @segmentationLogic.setter
    def segmentationLogic(self, logic) -> None:
        self._segmentationLogic = logic

    # ------------------------------------------------------------------ scene
    def observeScene(self, scene) -> None:
        self.unobserveScene()
        self._scene = scene
        if scene is None:
            return
        self._observations = [
            scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, self.onSceneStartClose),
            scene.AddObserver(slicer.vtkMRMLScene.EndCloseEvent, self.onSceneEndClose),
        ]

    def unobserveScene(self) -> None:
        if self._scene is not None:
            for tag in self._observations:
                self._scene.RemoveObserver(tag)
        self._observations = []

    def onSceneStartClose(self, caller=None, event=None) -> None:
        """The scene is closing: every running job is detached from it and asked to stop (the engine
        writes its checkpoint and exits within seconds, while Slicer goes on; Resume continues from it).
        Nothing waits here: a blocking stop froze Slicer for up to a minute."""
        for job in list(self.activeJobs):
            logger.info("LightUNETR training: scene closing, stopping %s", job)
            job.detach()

    def onSceneEndClose(self, caller=None, event=None) -> None:
        self.activeJobs = [j for j in self.activeJobs if not j.done]

    def poll(self) -> bool:
        """Poll every active job (also the detached ones, until their process is gone); True while any runs."""
        for job in list(self.activeJobs):
            job.poll()
        return any(not j.done for j in self.activeJobs)

    # ------------------------------------------------------------------ setup
    def caseTable(self, folderItemId: int | None = None, scene=None) -> CaseTable:
        """The case table of the scene (or of one subject-hierarchy folder)."""
        return CaseTable.from_scene(scene or self._scene or slicer.mrmlScene, folderItemId)

    def setup(self, labeledPairs=(), unlabeledVolumes=(), config=None, validationPairs=(), classes=None) -> CaseTable:
        """Console API: a checked case table from (volume, segmentation) pairs and unlabelled volumes."""
        table = CaseTable.from_nodes(labeledPairs, unlabeledVolumes, validationPairs, classes)
        table.check(as_config(config))
        return table

    def uniqueModelName(self, name: str) -> str:
        """``name``, or ``name-2``, ``name-3``... when the models folder already has that model."""
        folder = self.segmentationLogic.library.folder
        base = name.strip() or "model"
        candidate, n = base, 2
        while os.path.exists(os.path.join(folder, _safe(candidate) + BUNDLE_SUFFIX)):
            candidate, n = f"{base}-{n}", n + 1
        return candidate

    # ------------------------------------------------------------------ run
    def start(self, table: CaseTable, config=None, jobFolder: str | None = None, waitForCompletion: bool = False,
              timeout: float | None = None, **callbacks) -> TrainingJob:
        """Check, export and start training. Never raises for bad input: the returned job is ``failed``
        with a message (and ``table.problems`` / ``row.problems`` say what to fix); no process starts."""
        unknown = set(callbacks) - {"on_progress", "on_validation", "on_event", "on_finished"}
        if unknown:
            raise TypeError(f"unknown callback(s) {sorted(unknown)}")
        job = TrainingJob(self, table, as_config(config), jobFolder, callbacks)
        self.lastJob = job
        job.start()
        if waitForCompletion:
            job.wait(timeout)
        return job

    def run(self, labeledPairs=(), unlabeledVolumes=(), config=None, validationPairs=(), waitForCompletion=True,
            timeout=None, jobFolder=None, **callbacks) -> TrainingJob:
        """Console API: setup + start (blocking unless ``waitForCompletion=False``)."""
        table = CaseTable.from_nodes(labeledPairs, unlabeledVolumes, validationPairs)
        return self.start(table, config, jobFolder, waitForCompletion, timeout, **callbacks)

    def openRun(self, folder: str, **callbacks) -> TrainingJob:
        """The job of an earlier run (a job folder this module made, or its ``run`` folder), e.g. after Slicer
        restarted: ``stopped`` when it has a checkpoint (``resume()`` continues from it), ``cancelled`` when it
        stopped before its first one (``resume()`` starts it anew in the same folder). Its cases are read from
        the job folder's exported data, so the scene need not hold them. Raises :class:`RunFolderError`."""
        import json

        from .cases import CaseTable

        folder = os.path.abspath(os.fspath(folder))
        if not os.path.isfile(os.path.join(folder, JOB_FILE)) and os.path.isfile(os.path.join(os.path.dirname(folder), JOB_FILE)):
            folder = os.path.dirname(folder)  # the run folder itself was chosen
        path = os.path.join(folder, JOB_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format") != JOB_FORMAT:
                raise RunFolderError(f"{path} has format {data.get('format')!r}; this module reads format {JOB_FORMAT}.")
            config = TrainingConfig.from_dict(data["config"])
            manifest = os.path.join(folder, data["manifest"])
            run_dir = os.path.join(folder, data["run_dir"])
        except FileNotFoundError:
            raise RunFolderError(f"{folder} is not a training job folder of this module (no {JOB_FILE}); choose a folder "
                                 f"under {self.jobsFolder}.") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, RunFolderError):
                raise
            raise RunFolderError(f"{path} cannot be read ({exc}).") from None
        if not os.path.isfile(manifest):
            raise RunFolderError(f"{folder}: the exported cases ({manifest}) are gone; the run cannot be resumed.")
        if any(j.folder == folder and not j.done for j in self.activeJobs):
            raise RunFolderError(f"{folder}: this run is already running in this session.")
        unknown = set(callbacks) - {"on_progress", "on_validation", "on_event", "on_finished"}
        if unknown:
            raise TypeError(f"unknown callback(s) {sorted(unknown)}")
        job = TrainingJob(self, CaseTable([]), config, folder, callbacks)
        job.modelName = data.get("model_name") or config.name
        job.manifest, job.runDir = manifest, run_dir
        job._restore_history()
        if job.resumable:
            job.status, job.message = STOPPED, (f"Run '{job.modelName}' stopped at iteration {job.iteration}/{job.total}; "
                                                "Resume continues from its checkpoint.")
        else:
            job.status, job.message = CANCELLED, f"Run '{job.modelName}' has no checkpoint yet; Resume starts it anew."
        self.lastJob = job
        return job

    def runs(self) -> list[dict]:
        """The job folders under :attr:`jobsFolder`, newest first: ``{"folder", "name", "resumable",
        "iteration", "total"}`` (for the "Resume a run" list)."""
        import json

        out = []
        if not os.path.isdir(self.jobsFolder):
            return out
        for entry in os.listdir(self.jobsFolder):
            folder = os.path.join(self.jobsFolder, entry)
            try:
                with open(os.path.join(folder, JOB_FILE), encoding="utf-8") as f:
                    data = json.load(f)
                run_dir = os.path.join(folder, data["run_dir"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            out.append({"folder": folder, "name": data.get("model_name", entry),
                        "resumable": os.path.isfile(os.path.join(run_dir, CHECKPOINT_NAME)),
                        "mtime": os.path.getmtime(os.path.join(folder, JOB_FILE))})
        return sorted(out, key=lambda r: r["mtime"], reverse=True)

    def stopAll(self, block: bool = False) -> None:
        for job in list(self.activeJobs):
            job.stop(block=block)

    def shutdown(self) -> None:
        """Kill every process (module cleanup / application exit) and stop observing the scene."""
        for job in list(self.activeJobs):
            job.kill()
        self.unobserveScene()


def apply_segment_appearance(bundlePath: str, table: CaseTable) -> dict:
    """Give the bundle's labels the colour and terminology of the same-named segments of the first
    labelled case (what the user chose in the Segment Editor), so segmentations made with the new model
    look like the training segmentations. Only ``model_card.json`` changes (the weights' SHA-256 is
    unaffected); written atomically. Returns {class name: (colour, terminology)} applied."""
    import json

    from LightUNETRSlicerLib import segments
    from LightUNETRSlicerLib.models import CARD_FILE

    from .cases import segment_id_by_name

    source = next((r.segmentation for r in table.rows if r.role == "labeled" and r.segmentation is not None
                   and r.segmentation.GetScene() is not None), None)
    if source is None:
        return {}
    card_path = os.path.join(bundlePath, CARD_FILE)
    with open(card_path, encoding="utf-8") as f:
        card = json.load(f)
    applied = {}
    for label in card.get("labels", []):
        if int(label.get("value", 0)) == 0:
            continue
        sid = segment_id_by_name(source, str(label.get("name", "")))
        if sid is None:
            continue
        segment = source.GetSegmentation().GetSegment(sid)
        color = [min(1.0, max(0.0, float(c))) for c in segment.GetColor()]
        label["color"] = color
        terminology = segments.get_terminology(segment)
        if terminology:
            label["terminology"] = terminology
        applied[label["name"]] = (color, terminology or None)
    tmp = card_path + f".tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2)
    os.replace(tmp, card_path)
    return applied


def rank_by_uncertainty(results: list) -> list:
    """Results most in need of review first: by ``reviewScore`` (the engine's mean uncertainty within 5 mm of
    the predicted structures, lightunetr_core/inference/statistics.py), else by ``meanUncertainty``; results
    with neither are left out."""
    def key(r):
        return r.get("reviewScore") if r.get("reviewScore") is not None else r.get("meanUncertainty")

    return sorted((r for r in results if key(r) is not None), key=key, reverse=True)

