"""``python -m MedSegCNNLib``: the same as the ``medsegcnn`` command."""

import sys

from .cli.main import main

sys.exit(main())
