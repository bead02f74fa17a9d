"""Analysis of models and results: metrics (classification and segmentation), calibration,
bootstrap intervals, figures, run comparison, scoring a saved model on a dataset (``evaluate``),
Grad-CAM explanations, shortcut probes and the report. Nothing here imports Lightning.

Names are imported lazily (``from covidcxr.analysis import classification_metrics``) so that
importing the package does not load torch or matplotlib.
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

_EXPORTS = {
    "classification_metrics": "covidcxr.analysis.metrics",
    "ClassificationMeter": "covidcxr.analysis.metrics",
    "confusion_matrix_csv": "covidcxr.analysis.metrics",
    "row_normalised": "covidcxr.analysis.metrics",
    "best_epoch": "covidcxr.analysis.plots",
    "plot_training_curves": "covidcxr.analysis.plots",
    "read_history_csv": "covidcxr.analysis.plots",
    "plot_confusion_matrix": "covidcxr.analysis.plots",
    "plot_confusion_matrices": "covidcxr.analysis.plots",
    "ComparisonTable": "covidcxr.analysis.compare",
    "RunSummary": "covidcxr.analysis.compare",
    "compare_runs": "covidcxr.analysis.compare",
    "read_run_summary": "covidcxr.analysis.compare",
    "format_table": "covidcxr.analysis.compare",
    "write_table": "covidcxr.analysis.compare",
    "plot_test_confusion_matrices": "covidcxr.analysis.compare",
    "fit_temperature": "covidcxr.analysis.calibration",
    "apply_temperature": "covidcxr.analysis.calibration",
    "expected_calibration_error": "covidcxr.analysis.calibration",
    "reliability_table": "covidcxr.analysis.calibration",
    "calibration_summary": "covidcxr.analysis.calibration",
    "plot_reliability": "covidcxr.analysis.calibration",
    "bootstrap_intervals": "covidcxr.analysis.bootstrap",
    "per_source_metrics": "covidcxr.analysis.probes",
    "lung_probe": "covidcxr.analysis.probes",
    "duplicate_leakage": "covidcxr.analysis.probes",
    "build_report": "covidcxr.analysis.report",
    "evaluate": "covidcxr.analysis.evaluate",
    "explain_files": "covidcxr.analysis.explain",
    "evaluate_segmentation": "covidcxr.analysis.segmentation",
    "dice_score": "covidcxr.analysis.segmentation_metrics",
    "iou_score": "covidcxr.analysis.segmentation_metrics",
    "hausdorff95": "covidcxr.analysis.segmentation_metrics",
    "segmentation_metrics": "covidcxr.analysis.segmentation_metrics",
    "SegmentationMeter": "covidcxr.analysis.segmentation_metrics",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
