"""nnU-Net v2's preprocessing, reproduced for imported models: the plan a model card records (:mod:`.plan`),
the steps around the network (:mod:`.preprocessing`) and its resampling (:mod:`.resampling`)."""
