"""Models trained with other tools, made MedSegCNN model folders: nnU-Net v2 results folders
(:mod:`.nnunet_results` reads them safely, :mod:`.nnunet_plans` and :mod:`.nnunet_weights` translate the network,
:mod:`.nnunet_import` writes the model).

The nnU-Net touch points: every place MedSegCNN reads or mirrors nnU-Net v2's formats or code (to revisit when
nnU-Net changes them). Modules are under ``MedSegCNNLib`` unless named otherwise.

- Results folders (``<Trainer>__<Plans>__<configuration>/fold_K/``, trainer names): :mod:`.nnunet_results`;
  the import: :mod:`.nnunet_import`, ``cli.import_command`` (``medsegcnn import nnunet``), the Slicer module's
  ``MedSegCNNModule.logic.importNnUNet`` and ``MedSegCNNModule.widget`` ("Import nnU-Net model...").
- Checkpoints (``checkpoint_final.pth``: the pickled globals allowed, ``network_weights``):
  :mod:`.nnunet_results` (read with ``checkpoint.weights_file``'s kinds), :mod:`.nnunet_weights` (nnU-Net's
  state-dict names → MedSegCNN's, the channels the weights show).
- ``plans.json``: :mod:`.nnunet_plans` (the ``architecture`` entry → a network configuration);
  :mod:`.nnunet_import` (the configuration's preprocessing → ``data.nnunet.plan.NnUNetPlan``, the plan a model card
  records with ``"kind": "nnunet"``, validated by ``checkpoint.model_card``).
- ``dataset.json`` and dataset folders (``imagesTr``/``labelsTr``, channel files ``<case>_0000``):
  :mod:`.nnunet_results` and :mod:`.nnunet_import` (labels, regions, channels, image reader); ``data.msd`` (v1 and v2
  descriptions), ``data.dataset`` (training folders), ``data.export`` (writes such a folder), ``image.cases`` (the
  channel-file rule).
- Network layout: ``networks.nnunet_unet`` (PlainConvUNet and ResidualEncoderUNet rebuilt), ``networks.fold_mean``
  (folds' logits averaged), ``networks.blocks.init_he_`` (its initialisation); ``inference.openvino_backend``
  (a workaround for ResidualEncoderUNet's residual group norm).
- Preprocessing and resampling: ``data.nnunet.preprocessing`` (its steps around the network: transpose, crop,
  normalise, resample, and back), ``data.nnunet.resampling`` (its resampling, without SciPy).
- Inference: ``inference.nnunet_inference`` (an imported model's prediction), ``inference.segment`` (the dispatch),
  ``inference.sliding_window`` (the ``"nnunet"`` Gaussian window weights), ``inference.predictor`` (logits
  averaged); ``annotation.project`` (imported models are not fine-tuned).
- Recipes after nnU-Net (its published rules, not its code or files): ``data.planning``, ``training.planner``,
  ``training.schedule``, ``training.optim``, ``losses``, ``data.augmentation``.
- Tests against nnunetv2 itself: ``Testing/nnunet/``, ``Testing/networks/test_nnunet_unet.py``,
  ``Testing/nnunet_support.py`` (versions in ``Testing/requirements-nnunet.txt``).
"""
