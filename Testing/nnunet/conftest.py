"""nnU-Net v2 fixtures: a real nnU-Net v2 results folder, built once per session with nnunetv2's own code."""

from __future__ import annotations

import pytest
from nnunet_support import FAST_VARIANT, NnunetResults, build_nnunet_results, nnunet_available


@pytest.fixture(scope="session")
def nnunet_results(tmp_path_factory: pytest.TempPathFactory) -> NnunetResults:
    """The fast representative (``FAST_VARIANT``: 3d_fullres, fold 0, nnUNetTrainer with mirroring, nnUNetPlans at
    2 mm, 40 training iterations; about 20-25 s on 2 shared cores), with its three held-out hippocampus cases."""
    reason = nnunet_available()
    if reason is not None:
        pytest.skip(reason)
    return build_nnunet_results(tmp_path_factory.mktemp("nnunet-fast"), FAST_VARIANT)
