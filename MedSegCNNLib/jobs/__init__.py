"""Jobs: runs of the command line in a separate process (for the Slicer panel: long work, read with a timer).

- :class:`BackgroundRun`: ``python -m MedSegCNNLib ...`` in a separate process; non-blocking :meth:`~BackgroundRun.poll`
  of progress events, :meth:`~BackgroundRun.cancel`, :meth:`~BackgroundRun.wait`, the log and the error.
- :func:`predict_args`, :func:`train_args`: argument lists from typed options; :func:`python_executable`:
  the interpreter to use (``PythonSlicer`` inside Slicer).

Example (a script; the Slicer panel calls ``poll`` from a ``qt.QTimer`` instead of ``wait``)::

    run = BackgroundRun(predict_args("models/hippo", "case.nii.gz", "case.seg.nrrd")).start()
    if run.wait() != "completed":
        print(run.error)
"""

from .commands import predict_args, python_executable, train_args
from .process import BackgroundRun, Progress

__all__ = ["BackgroundRun", "Progress", "predict_args", "python_executable", "train_args"]
