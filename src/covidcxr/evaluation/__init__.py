"""Evaluation: classification metrics (function + accumulator), figures, run comparison.

Names are imported lazily (``from covidcxr.evaluation import classification_metrics``) so that
importing the package does not load torch or matplotlib.
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

_EXPORTS = {
    "classification_metrics": "covidcxr.evaluation.metrics",
    "ClassificationMeter": "covidcxr.evaluation.metrics",
    "confusion_matrix_csv": "covidcxr.evaluation.metrics",
    "row_normalised": "covidcxr.evaluation.metrics",
    "best_epoch": "covidcxr.evaluation.plots",
    "plot_training_curves": "covidcxr.evaluation.plots",
    "read_history_csv": "covidcxr.evaluation.plots",
    "plot_confusion_matrix": "covidcxr.evaluation.plots",
    "plot_confusion_matrices": "covidcxr.evaluation.plots",
    "ComparisonTable": "covidcxr.evaluation.compare",
    "RunSummary": "covidcxr.evaluation.compare",
    "compare_runs": "covidcxr.evaluation.compare",
    "read_run_summary": "covidcxr.evaluation.compare",
    "format_table": "covidcxr.evaluation.compare",
    "write_table": "covidcxr.evaluation.compare",
    "plot_test_confusion_matrices": "covidcxr.evaluation.compare",
    "fit_temperature": "covidcxr.evaluation.calibration",
    "apply_temperature": "covidcxr.evaluation.calibration",
    "expected_calibration_error": "covidcxr.evaluation.calibration",
    "reliability_table": "covidcxr.evaluation.calibration",
    "calibration_summary": "covidcxr.evaluation.calibration",
    "plot_reliability": "covidcxr.evaluation.calibration",
    "bootstrap_intervals": "covidcxr.evaluation.bootstrap",
    "per_source_metrics": "covidcxr.evaluation.probes",
    "lung_probe": "covidcxr.evaluation.probes",
    "duplicate_leakage": "covidcxr.evaluation.probes",
    "build_report": "covidcxr.evaluation.report",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
