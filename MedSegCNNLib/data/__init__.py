"""Datasets: Medical Segmentation Decathlon (``dataset.json``) descriptions and, later, the data pipeline."""
