"""Getting a model into the library from the GUI (Qt-free): the catalog of released models, the model card
shown before anything is added, and the background jobs that download a catalog model or convert an
authors' ``.pth`` checkpoint.

The jobs are the engine's own commands (``lightunetr download NAME`` / ``lightunetr import-reference FILE``)
in a subprocess through :class:`~lightunetr_core.jobs.runner.JobRunner`: the same verification (weights only, strict load as
the released network), atomic bundle writing and clean-up on failure or cancel as on the command line, and
no torch in Slicer's process. When a job finishes, the library tells every model list (module, effect,
Training's "Start from").

Console API::

    job = shared_logic().downloadModel("la-8lab")       # returns at once; job.poll() from a timer
    job.wait(); job.ok, job.model, job.message
"""

from __future__ import annotations

import json
import os
import re
import zipfile

from lightunetr_core.jobs import runner as jobrunner
from .models import BUNDLE_SUFFIX, CARD_FILE, ModelError, ModelInfo, ModelLibrary, read_model_info

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = (
    jobrunner.PENDING, jobrunner.RUNNING, jobrunner.COMPLETED, jobrunner.FAILED, jobrunner.CANCELLED)
#: Files "Add model..." accepts (besides a bundle folder, chosen by its model_card.json).
CHECKPOINT_SUFFIXES = (".pth", ".pt")


# ---------------------------------------------------------------------------------------------- catalog
def catalog_entries() -> list:
    """The catalog's entries (:class:`lightunetr_core.catalog.CatalogEntry`; reading it needs no torch)."""
    from lightunetr_core.catalog.catalog import load_catalog

    return list(load_catalog().values())


def installed_catalog_models(library: ModelLibrary) -> dict[str, ModelInfo]:
    """{catalog name: installed model} for the library's bundles that came from the catalog."""
    models, _ = library.discover()
    return {m.card.get("provenance", {}).get("catalog"): m for m in models if m.card.get("provenance", {}).get("catalog")}


def presets() -> dict[str, str]:
    """{preset: description} of the authors' released models (``lightunetr import-reference --preset``)."""
    from lightunetr_core.catalog.reference import PRESETS

    return {name: s["description"] for name, s in PRESETS.items()}


# ---------------------------------------------------------------------------------------------- cards
def peek_card(source: str) -> dict:
    """The model card of a bundle folder (or its ``model_card.json``) or of a zipped bundle, without copying
    or unpacking anything. Raises :class:`ModelError` naming the problem."""
    source = os.fspath(source)
    if source.lower().endswith(".zip") and os.path.isfile(source):
        try:
            with zipfile.ZipFile(source) as z:
                names = [n for n in z.namelist() if n.endswith("/" + CARD_FILE) and n.count("/") == 1]
                if len(names) != 1:
                    raise ModelError(f"{source} is not a zipped LightUNETR bundle (it must hold <name>{BUNDLE_SUFFIX}/"
                                     f"{CARD_FILE}); make one with 'lightunetr export-bundle'.")
                info = z.getinfo(names[0])
                if info.file_size > 1 << 20:
                    raise ModelError(f"{source}: {names[0]} is {info.file_size} bytes; not a model card.")
                return json.loads(z.read(names[0]).decode("utf-8"))
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"{source} cannot be read as a zipped bundle ({exc}).") from None
    return read_model_info(source).card


def describe_card(card: dict) -> str:
    """What a user reads before a model is added: name, version, what it segments, the input it expects,
    licence, authors and citation."""
    plan = card.get("preprocessing") or {}
    norms = ", ".join(str(n.get("kind", n)) if isinstance(n, dict) else str(n) for n in plan.get("normalization") or [])
    spacing = plan.get("target_spacing")
    labels = [lb.get("name") for lb in card.get("labels", []) if int(lb.get("value", 0)) != 0]
    lines = [f"{card.get('name', '?')}" + (f" (version {card['version']})" if card.get("version") else "")]
    if card.get("description"):
        lines.append(card["description"])
    lines += [
        f"Segments: {', '.join(labels) or '?'}",
        f"Input: {len(card.get('input_channels', []))} channel(s) ({', '.join(card.get('input_channels', []))}); "
        f"resampled to {'x'.join(f'{s:g}' for s in spacing) + ' mm' if spacing else 'its own spacing'}; "
        f"normalisation: {norms or '?'}",
        f"Network: {card.get('architecture', '?')}, patch {'x'.join(str(p) for p in card.get('patch_size', []))}",
    ]
    provenance = card.get("provenance") or {}
    if provenance.get("input"):
        crop = provenance["input"].get("crop")
        if crop:
            lines.append(f"Crop/ROI: {crop}")
    lines.append(f"Licence: {card.get('license') or 'not stated'}")
    if card.get("authors"):
        lines.append(f"Authors: {card['authors']}")
    if card.get("citation"):
        lines.append(f"Cite: {card['citation']}")
    if provenance.get("recipe") or provenance.get("source"):
        lines.append(f"Made by: {provenance.get('recipe', '')} {provenance.get('source', '')}".rstrip())
    for change in card.get("changelog") or []:
        if isinstance(change, dict):
            lines.append(f"Change {change.get('version', '')} {change.get('date', '')}: {change.get('changes', '')}")
    return "\n".join(lines)


def bundle_name_for(path: str) -> str:
    """A library name for an authors' checkpoint file (``lightunetr_best_model_la_4lab.pth`` → ``la_4lab``)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    stem = re.sub(r"^lightunetr_best_model_", "", stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "model"


# ---------------------------------------------------------------------------------------------- jobs
class ModelInstallJob:
    """A download or a conversion running in the background: ``status``, ``progress`` (0..1, None while
    unknown), ``message``, ``poll()``, ``wait()``, ``cancel()``, ``kill()``; ``model`` (:class:`ModelInfo`)
    once the bundle is in the library."""

    def __init__(self, library: ModelLibrary, command: str, args: list[str], title: str, python: str | None = None,
                 environment: dict | None = None, on_progress=None, on_finished=None):
        self.library = library
        self.title = title
        self.status = PENDING
        self.message = ""
        self.model: ModelInfo | None = None
        self.on_progress, self.on_finished = on_progress, on_finished
        self.runner = jobrunner.JobRunner(jobrunner.core_command(command, *args, python=python),
                                          env=jobrunner.job_environment(environment), on_event=self._on_event,
                                          on_finished=self._on_runner_finished, grace_s=10.0, name=command)

    @property
    def done(self) -> bool:
        return self.status in jobrunner.FINAL_STATES

    @property
    def ok(self) -> bool:
        return self.status == COMPLETED

    @property
    def progress(self) -> float | None:
        return 1.0 if self.ok else self.runner.fraction

    @property
    def log(self) -> list[str]:
        return self.runner.log_lines

    def __repr__(self):
        return f"<ModelInstallJob {self.title} {self.status} {self.message!r}>"

    def start(self) -> "ModelInstallJob":
        try:
            self.runner.start()
        except OSError as exc:
            self._finish(FAILED, f"Could not start the {self.runner.name} process ({exc}).")
            return self
        self.status = RUNNING
        self.message = f"{self.title}: starting..."
        return self

    def _on_event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "progress" and ev.get("unit") == "byte" and ev.get("total"):
            self.message = f"{self.title}: {ev['done'] / 1e6:.1f} of {ev['total'] / 1e6:.1f} MB"
        elif kind in ("stage", "log") and ev.get("message"):
            self.message = f"{self.title}: {ev['message']}"
        if self.on_progress:
            self.on_progress(self)

    def _on_runner_finished(self, runner: jobrunner.JobRunner) -> None:
        if runner.status == jobrunner.CANCELLED and runner.returncode != jobrunner.EXIT_OK:
            self._finish(CANCELLED, f"{self.title}: cancelled; nothing was added to the model library.")
            return
        if runner.returncode != jobrunner.EXIT_OK:  # (exit 0 after a late cancel: the bundle is complete)
            self._finish(FAILED, f"{self.title} failed: {runner.error_message or 'unknown error'}")
            return
        paths = runner.output_paths("bundle")
        try:
            if not paths:
                raise ModelError("the job wrote no bundle")
            self.model = read_model_info(paths[-1])
        except ModelError as exc:
            self._finish(FAILED, f"{self.title} finished but its bundle cannot be read: {exc}")
            return
        self.library.notify_changed()  # every model list shows the new model
        self._finish(COMPLETED, f"Model '{self.model.name}' is in the model library.")

    def _finish(self, status: str, message: str) -> None:
        self.status, self.message = status, message
        if self.on_finished:
            self.on_finished(self)

    def poll(self) -> bool:
        if not self.done:
            self.runner.poll()
        return not self.done

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> str:
        jobrunner.poll_until_done(self.poll, timeout, self.title, interval)
        return self.status

    def cancel(self) -> None:
        if not self.done:
            self.message = f"{self.title}: cancelling..."
            self.runner.cancel()

    def kill(self) -> None:
        self.runner.kill(wait_s=5.0)


def download_job(library: ModelLibrary, name: str, python: str | None = None, environment: dict | None = None,
                 **callbacks) -> ModelInstallJob:
    """``lightunetr download NAME --models-dir <library>`` (not started)."""
    return ModelInstallJob(library, "download", [name, "--models-dir", library.folder], f"Downloading {name}",
                           python=python, environment=environment, **callbacks)


def import_checkpoint_job(library: ModelLibrary, checkpoint: str, preset: str, name: str | None = None,
                          overwrite: bool = False, python: str | None = None, environment: dict | None = None,
                          **callbacks) -> ModelInstallJob:
    """``lightunetr import-reference FILE --preset P -o <library>/NAME.lightunetr`` (not started).
    Raises :class:`ModelError` when the file or the target is unusable."""
    checkpoint = os.fspath(checkpoint)
    if not os.path.isfile(checkpoint):
        raise ModelError(f"{checkpoint}: no such file.")
    name = name or bundle_name_for(checkpoint)
    target = os.path.join(library.folder, name + BUNDLE_SUFFIX)
    if os.path.exists(target) and not overwrite:
        raise ModelError(f"A model '{name}{BUNDLE_SUFFIX}' is already installed in {library.folder}; choose another "
                         "name or remove it first.")
    args = [checkpoint, "--preset", preset, "-o", target, "--name", name] + (["--overwrite"] if overwrite else [])
    return ModelInstallJob(library, "import-reference", args, f"Converting {os.path.basename(checkpoint)}",
                           python=python, environment=environment, **callbacks)
