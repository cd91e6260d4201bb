"""Evaluation metrics: ``from metric import NLGEval`` as the released test_evaluation.py expects, and the
protocol that turns generated text into the paper's numbers (magic.metric.protocol)."""
from .nlgeval import (JAVA_INSTALL_HINT, OVERLAP_METRICS, MeteorError, NLGEval, SafeMeteor, bleu_from_counts,
                      bleu_statistics, distinct_n, java_available)
from .protocol import (METRIC_ORDER, clean_response, compute_scores, compute_scores_and_samples, format_scores,
                       one_line, prepare_for_metrics, tokenizer_name, word_tokenize)

__all__ = ["NLGEval", "distinct_n", "SafeMeteor", "MeteorError", "OVERLAP_METRICS", "JAVA_INSTALL_HINT",
           "java_available", "METRIC_ORDER", "clean_response", "compute_scores", "format_scores", "one_line",
           "prepare_for_metrics", "tokenizer_name", "word_tokenize", "bleu_statistics", "bleu_from_counts",
           "compute_scores_and_samples"]
