"""Qt layer of the dependency installation (Slicer only; the work is :mod:`.environment`, Qt-free).

Used by the Segmentation and Training modules and by the Segment Editor effect, so all three ask the
same question and install the same way: torch through the PyTorch extension (its own blocking call,
under a wait cursor), then the other packages in a background pip process with a progress dialog that
shows pip's output and can cancel it, and a restart prompt when pip changed a package Slicer had loaded.
"""

import logging

import qt
import slicer

from . import environment

logger = logging.getLogger("LightUNETR")


class DependencyInstaller:
    """``ensure(onReady)``: True when everything is installed (call on); otherwise asks, installs in the
    background, calls ``onReady()`` once it worked, and returns False."""

    def __init__(self, parent=None):
        self.parent = parent
        self.install = None
        self.dialog = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self._poll)
        self._onReady = None

    @property
    def running(self) -> bool:
        return self.install is not None and not self.install.done

    def ensure(self, onReady=None) -> bool:
        missing = environment.missing_dependencies()
        if not missing:
            return True
        if self.running:
            slicer.util.infoDisplay("LightUNETR is still installing its Python packages; please wait.")
            return False
        if slicer.app.testingEnabled():
            logger.warning("LightUNETR: not installing dependencies in testing mode: %s", missing)
            return False
        text = environment.describe_missing(missing)
        if not slicer.util.confirmOkCancelDisplay(
                text + "\n\nInstall them now? Packages Slicer already has (torch, numpy, SimpleITK, scipy) are kept "
                "as they are. This can take several minutes.", windowTitle="LightUNETR: install Python packages"):
            return False
        if "torch" in missing:
            slicer.util.showStatusMessage("Installing PyTorch through the PyTorch extension (Slicer does not respond "
                                          "until it is done)...")
            with slicer.util.WaitCursor():
                ok, message = environment.install_torch_with_pytorch_extension()
            if not ok:
                slicer.util.errorDisplay(message)
                return False
        self._onReady = onReady
        self.install = environment.DependencyInstall(environment.pip_requirements(environment.missing_dependencies()))
        self.install.start()
        self.dialog = slicer.util.createProgressDialog(parent=self.parent, value=0, maximum=0,
                                                       labelText=self.install.message,
                                                       windowTitle="LightUNETR: installing Python packages")
        self.dialog.setCancelButtonText("Cancel")
        self.dialog.connect("canceled()", self.install.cancel)
        self.timer.start()
        self._poll()
        return False

    def _poll(self):
        install = self.install
        if install is None:
            self.timer.stop()
            return
        still = install.poll()
        if install.log and self.dialog is not None:
            self.dialog.labelText = install.log[-1][:200]
        if still:
            return
        self.timer.stop()
        self._closeDialog()
        for line in install.log:
            logger.info("pip: %s", line)
        if install.status != "completed":
            if install.status == "failed":
                slicer.util.errorDisplay(install.message, detailedText="\n".join(install.log[-60:]))
            return
        still_missing = environment.missing_dependencies()
        if still_missing:
            slicer.util.errorDisplay("Still missing after installation: " + ", ".join(still_missing)
                                     + ". Restart Slicer and try again.", detailedText="\n".join(install.log[-60:]))
            return
        if install.restart_needed:
            if slicer.util.confirmYesNoDisplay(install.message + "\n\nRestart Slicer now?"):
                slicer.util.restart()
            return
        slicer.util.showStatusMessage(install.message, 5000)
        onReady, self._onReady = self._onReady, None
        if onReady is not None:
            onReady()

    def _closeDialog(self):
        # createProgressDialog parents the dialog to the main window: without deleteLater every install
        # would leave a hidden dialog behind.
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None

    def cleanup(self):
        self.timer.stop()
        if self.running:
            self.install.cancel()
        self._closeDialog()
