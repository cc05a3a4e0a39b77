"""Annotation projects: segment a case with the newest model, let the user correct it, accept it, and learn from
every accepted case in the background, so that each next prediction needs less correcting.

- :class:`AnnotationProject`: create or open a project folder (:mod:`.project`), ``next_case``, ``accept``,
  ``skip``, ``status``; the newest model at ``PROJECT/models/latest``.
- The project file's format: :mod:`.project_file`; the model versions: :mod:`.versions`; the background learner:
  :mod:`.learner`.
"""

from .learner import MIN_CASES_TO_LEARN
from .project import STRATEGIES, AcceptResult, AnnotationProject, NextCase, ProjectStatus
from .project_file import CaseState

__all__ = [
    "MIN_CASES_TO_LEARN",
    "STRATEGIES",
    "AcceptResult",
    "AnnotationProject",
    "CaseState",
    "NextCase",
    "ProjectStatus",
]
