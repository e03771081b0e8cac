"""Dialogs that bring a model into the library (Slicer only: Qt). Thin: what they show and run comes from
:mod:`.modelinstall` (Qt-free, tested on slicer-core).

- :func:`chooseCatalogModel`: the catalog, each model with the input it expects, its measured run time and its
  licence, before anything is downloaded ("Download..." button).
- :func:`addModelInteractively`: "Add model..." — a bundle (its ``model_card.json``), a zipped bundle or an
  authors' ``.pth`` (the preset is asked for); the model card is shown before anything is added.
- :class:`InstallProgress`: a download or conversion job in a window-modal progress dialog whose Cancel
  really stops the job (the subprocess is told to stop and leaves nothing behind); the job is polled from a
  ``QTimer``, so Slicer stays responsive.

Qt/PythonQt calls (checked against Slicer 5.10 / 5.12, see docs/slicer.md): ``qt.QDialog`` +
``qt.QDialogButtonBox`` + ``exec_()`` as in Modules/Scripted/ExtensionWizard/ExtensionWizardLib/
CreateComponentDialog.py, ``qt.QListWidget`` as in Modules/Scripted/DICOMLib/DICOMRecentActivityWidget.py,
``slicer.util.createProgressDialog`` (Base/Python/slicer/util.py).
"""

from __future__ import annotations

import os

import qt

import slicer

from LightUNETRSlicerLib import modelinstall


def chooseCatalogModel(parent, library) -> str | None:
    """The catalog name the user chose to download, or None."""
    entries = modelinstall.catalog_entries()
    installed = modelinstall.installed_catalog_models(library)
    dialog = qt.QDialog(parent)
    dialog.windowTitle = "Download a Light-UNETR model"
    layout = qt.QVBoxLayout(dialog)
    intro = qt.QLabel("Models released by the authors of Light-UNETR / CSE. Each is downloaded once, checked "
                      "(it must load as the released network) and added to the model library, where the module, "
                      "the Segment Editor effect and Training's 'Start from' find it.")
    intro.wordWrap = True
    layout.addWidget(intro)
    listWidget = qt.QListWidget()
    for entry in entries:
        listWidget.addItem(f"{entry.name}: {entry.title}" + ("  (installed)" if entry.name in installed else ""))
    layout.addWidget(listWidget)
    details = qt.QPlainTextEdit()
    details.readOnly = True
    layout.addWidget(details)
    buttons = qt.QDialogButtonBox()
    downloadButton = buttons.addButton("Download", qt.QDialogButtonBox.AcceptRole)
    buttons.addButton(qt.QDialogButtonBox.Close)
    layout.addWidget(buttons)
    buttons.connect("accepted()", dialog, "accept()")
    buttons.connect("rejected()", dialog, "reject()")
    dialog.resize(640, 480)

    def onRowChanged(row):
        entry = entries[row] if 0 <= row < len(entries) else None
        details.plainText = entry.describe() if entry else ""
        downloadButton.enabled = entry is not None and entry.name not in installed
        downloadButton.toolTip = "Already in the model library" if entry is not None and entry.name in installed else ""

    listWidget.connect("currentRowChanged(int)", onRowChanged)
    listWidget.currentRow = next((n for n, e in enumerate(entries) if e.name not in installed), 0)
    onRowChanged(listWidget.currentRow)
    accepted = dialog.exec_()
    row = listWidget.currentRow
    dialog.deleteLater()  # a child of the main window: not left behind for the whole session
    return entries[row].name if accepted and 0 <= row < len(entries) else None


class InstallProgress:
    """Show a :class:`~.modelinstall.ModelInstallJob` (already started) until it ends; ``onDone(job)`` then.

    ``QProgressDialog`` emits ``canceled()`` from its Cancel button, Escape *and* its close event (the title
    bar's X, and our own ``close()``), and hides itself each time; so a cancel of a finished job is ignored,
    ``canceled()`` is disconnected before the dialog is closed, and a dialog hidden while its job still runs
    is shown again until the job has really stopped (Qt 5.15 qprogressdialog.cpp)."""

    def __init__(self, job, parent, onDone=None):
        self.job, self.onDone = job, onDone
        self.finished = False
        self.dialog = slicer.util.createProgressDialog(parent=parent, value=0, maximum=0, labelText=job.message or job.title,
                                                       windowTitle=job.title, autoClose=False, autoReset=False)
        self.dialog.windowModality = qt.Qt.WindowModal
        self.dialog.connect("canceled()", self.onCancel)
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onTimer)
        self.timer.start()
        self.dialog.show()

    def onCancel(self):
        if self.finished or self.job.done:
            return
        self.job.cancel()
        self.dialog.labelText = "Cancelling..."
        self.dialog.show()

    def close(self, cancelJob: bool = False) -> None:
        """Stop showing the job (``cancelJob``: and stop the job), e.g. when the module widget is cleaned up."""
        if self.finished:
            return
        self.finished = True
        self.timer.stop()
        if cancelJob:
            self.job.cancel()
        self.dialog.disconnect("canceled()", self.onCancel)
        self.dialog.close()
        self.dialog.deleteLater()

    def onTimer(self):
        if self.finished:
            return
        running = self.job.poll()
        fraction = self.job.progress
        if fraction is not None:
            self.dialog.maximum = 100
            self.dialog.value = int(round(100 * fraction))
        if self.job.message:
            self.dialog.labelText = self.job.message
        if running:
            if not self.dialog.visible:
                self.dialog.show()
            return
        self.close()
        if self.job.status == "failed":
            slicer.util.errorDisplay(self.job.message, windowTitle=self.job.title, detailedText="\n".join(self.job.log[-40:]))
        if self.onDone:
            self.onDone(self.job)


def _choosePreset(parent, path: str) -> str | None:
    """Ask which released model a ``.pth`` is; shows what each preset sets."""
    from lightunetr_core.catalog.reference import PRESETS

    dialog = qt.QDialog(parent)
    dialog.windowTitle = "Convert an authors' checkpoint"
    layout = qt.QVBoxLayout(dialog)
    label = qt.QLabel(f"{os.path.basename(path)} is a checkpoint of the authors' Light-UNETR code. Which released "
                      "model is it? The preset sets the patch size, spacing, normalisation and labels of the bundle.")
    label.wordWrap = True
    layout.addWidget(label)
    combo = qt.QComboBox()
    names = sorted(PRESETS)
    for name in names:
        combo.addItem(f"{name}: {PRESETS[name]['description']}")
    guess = next((n for n, p in enumerate(names) if p in os.path.basename(path).lower()), 0)
    combo.currentIndex = guess
    layout.addWidget(combo)
    details = qt.QPlainTextEdit()
    details.readOnly = True
    layout.addWidget(details)

    def onPreset(index):
        s = PRESETS[names[index]]
        details.plainText = (f"Network: {s['variant']}, patch {'x'.join(map(str, s['patch_size']))}\n"
                             f"Spacing: {'x'.join(f'{v:g}' for v in s['spacing'])} mm; normalisation: {s['normalization']}\n"
                             f"Input: {', '.join(s['modality'])}; labels: {', '.join(s['labels'][1:])}\n"
                             "The file is loaded weights-only (no code is run) and must load strictly as this network.")

    combo.connect("currentIndexChanged(int)", onPreset)
    onPreset(guess)
    buttons = qt.QDialogButtonBox()
    buttons.setStandardButtons(qt.QDialogButtonBox.Ok | qt.QDialogButtonBox.Cancel)
    buttons.connect("accepted()", dialog, "accept()")
    buttons.connect("rejected()", dialog, "reject()")
    layout.addWidget(buttons)
    accepted = dialog.exec_()
    preset = names[combo.currentIndex]
    dialog.deleteLater()
    return preset if accepted else None


def addModelInteractively(parent, logic, onAdded, ensureEngine=lambda: True) -> "InstallProgress | None":
    """"Add model...": pick a file, show the card (or the preset), add or convert. ``onAdded(ModelInfo or
    None)``. ``ensureEngine()`` (the dependency installer) is asked only for a ``.pth``: converting runs the
    engine, while a bundle or a zip is only copied and checked (standard library)."""
    path = qt.QFileDialog.getOpenFileName(
        parent, "Add a model: a bundle's model_card.json, a zipped bundle or an authors' .pth", "",
        "LightUNETR models (model_card.json *.zip *.pth *.pt);;All files (*)")
    if not path:
        return None
    if path.lower().endswith(modelinstall.CHECKPOINT_SUFFIXES):
        if not ensureEngine():
            return None
        preset = _choosePreset(parent, path)
        if preset is None:
            return None
        # tryWithErrorDisplay shows the error, then re-raises it (Base/Python/slicer/util.py)
        with slicer.util.tryWithErrorDisplay("Could not convert the checkpoint.", waitCursor=False):
            job = logic.importCheckpoint(path, preset)
        return InstallProgress(job, parent, onDone=lambda j: onAdded(j.model if j.ok else None, j.message))
    with slicer.util.tryWithErrorDisplay("Could not add the model.", waitCursor=False):
        card = modelinstall.peek_card(path)
        if not slicer.util.confirmOkCancelDisplay(modelinstall.describe_card(card), windowTitle="Add this model?",
                                                  parent=parent):
            return None
        with slicer.util.WaitCursor():
            info = logic.addModelFromFile(path)
    onAdded(info, f"Added model {info.name}.")
    return None
