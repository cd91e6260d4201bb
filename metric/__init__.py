"""Evaluation metrics: ``from metric import NLGEval`` as the released test_evaluation.py expects."""
from .nlgeval import (JAVA_INSTALL_HINT, OVERLAP_METRICS, MeteorError, NLGEval, SafeMeteor, distinct_n,
                      java_available)

__all__ = ["NLGEval", "distinct_n", "SafeMeteor", "MeteorError", "OVERLAP_METRICS", "JAVA_INSTALL_HINT",
           "java_available"]
