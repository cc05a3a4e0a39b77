"""Installs the Python packages MedSegCNNLib needs: torch through the PyTorch extension, the rest with pip."""

# Slicer's API and its Python style are camelCase.
# ruff: noqa: N802, N803, N806

import importlib
import importlib.util

import slicer
from slicer.i18n import tr as _

#: The packages MedSegCNNLib needs at run time: import name -> pip requirement (as in pyproject.toml).
#: torch is installed through the PyTorch extension (the right build for the GPU), the rest with pip.
REQUIREMENTS = {
    "torch": "torch>=2.3",
    "numpy": "numpy>=1.24",
    "SimpleITK": "SimpleITK>=2.3",
    "tqdm": "tqdm>=4.60",
    "safetensors": "safetensors>=0.4",
    "matplotlib": "matplotlib>=3.7",
    "PIL": "Pillow>=10.0",
    "tifffile": "tifffile>=2023.7.10",
}

#: Optional packages: import name -> pip requirement (the pyproject.toml extra of the same name).
OPTIONAL_REQUIREMENTS = {"openvino": "openvino>=2024.4"}


class InstallLogic:
    """Finds and installs the missing packages of :data:`REQUIREMENTS` (the panel's and the self-test's installer)."""

    @staticmethod
    def missingRequirements() -> list[str]:
        """Import names (keys of REQUIREMENTS) of the packages that are not installed (found without importing)."""
        importlib.invalidate_caches()
        return [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]

    def installRequirements(self, askConfirmation: bool = True) -> bool:
        """Installs the missing packages, torch through the PyTorch extension and the rest with pip, after asking
        (unless ``askConfirmation`` is False); returns whether they are all there afterwards. Raises RuntimeError
        when torch is missing and the PyTorch extension is not installed."""
        missing = self.missingRequirements()
        if not missing:
            return True
        torchLogic = None
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise RuntimeError(
                    _(
                        "MedSegCNN installs PyTorch through the PyTorch extension, which is not installed. Install "
                        '"PyTorch" in the Extensions Manager (View > Extensions Manager), restart Slicer, and try '
                        "again."
                    )
                ) from None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        requirements = "\n".join(f"    {REQUIREMENTS[name]}" for name in missing)
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _(
                "MedSegCNN needs these Python packages, which are not installed:\n\n{requirements}\n\n"
                "Install them now? PyTorch is a large download; this can take several minutes."
            ).format(requirements=requirements),
            windowTitle=_("MedSegCNN: install Python packages"),
        ):
            return False
        if torchLogic is not None:
            torchRequirement = REQUIREMENTS["torch"].removeprefix("torch")
            if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=torchRequirement) is None:
                raise RuntimeError(
                    _("PyTorch was not installed; see the Python console, or use the PyTorch Utils module.")
                )
        others = [REQUIREMENTS[name] for name in missing if name != "torch"]
        if others:
            slicer.util.pip_install(others)
        return not self.missingRequirements()

    @staticmethod
    def isInstalled(name: str) -> bool:
        """Whether the package ``name`` (an import name) is installed (found without importing)."""
        importlib.invalidate_caches()
        return importlib.util.find_spec(name) is not None

    def offerOptional(self, name: str, benefit: str) -> bool:
        """Offers to install the optional package ``name`` (a key of OPTIONAL_REQUIREMENTS), saying what it brings
        (``benefit``); installs it with pip when the user agrees. Returns whether it is installed afterwards."""
        if self.isInstalled(name):
            return True
        requirement = OPTIONAL_REQUIREMENTS[name]
        if not slicer.util.confirmOkCancelDisplay(
            _("{benefit}\n\nInstall the optional Python package {requirement} now?").format(
                benefit=benefit, requirement=requirement
            ),
            windowTitle=_("MedSegCNN: optional Python package"),
        ):
            return False
        slicer.util.pip_install(requirement)
        return self.isInstalled(name)
