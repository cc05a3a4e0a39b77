"""Models trained with other tools, made MedSegCNN model folders: nnU-Net v2 results folders
(:mod:`.nnunet_results` reads them safely, :mod:`.nnunet_import` writes the model)."""
