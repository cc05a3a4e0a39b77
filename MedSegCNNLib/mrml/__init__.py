"""The MRML layer: the only code of the library that touches 3D Slicer's scene (scene passed as an argument).

Works inside the Slicer application and with the ``slicer-core`` wheel alike (only ``vtkMRML*`` / ``vtkSlicer*``
classes and VTK are used; they are imported on first use, so this package imports without Slicer). RAS↔LPS is
handled in :mod:`.geometry` alone; every image these functions take or give is a library :class:`Image` in LPS.

- :func:`image_from_volume_node`, :func:`image_from_volume_nodes`: scalar or vector (colour) volume node(s) →
  (multi-channel) image; :func:`.geometry.slice_as_2d` makes a single-slice volume's image 2D.
- :func:`volume_node_from_image`: image (probability or uncertainty map; several channels: a vector volume) →
  volume node.
- :func:`segmentation_from_labels`: label image → segmentation node on the input volume.
- :func:`labels_from_segmentation`: segmentation or label map volume node → label image on a volume's grid.
- :func:`table_from_metrics`: evaluation result → table node.
"""

from .multi_volume import image_from_volume_nodes
from .segmentation_labels import labels_from_segmentation
from .segmentations import segmentation_from_labels
from .tables import table_from_metrics
from .volumes import image_from_volume_node, volume_node_from_image

__all__ = [
    "image_from_volume_node",
    "image_from_volume_nodes",
    "labels_from_segmentation",
    "segmentation_from_labels",
    "table_from_metrics",
    "volume_node_from_image",
]
