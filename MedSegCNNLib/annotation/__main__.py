"""``python -m MedSegCNNLib.annotation PROJECT``: the background learner of an annotation project (see
:mod:`.learner`; started by the project, not by hand)."""

import sys

from .learner import main

sys.exit(main())
