"""Evaluation of binary classifiers: metrics, bootstrap CIs, calibration, subgroups, plots, report.

Modules (one job each):

- ``arrays``: input checks and array type aliases.
- ``weighted``: metric kernels over a matrix of sample weights (one row per bootstrap resample).
- ``metrics``: the same metrics as plain functions returning floats, metric sets, threshold choice.
- ``curves``: ROC and precision-recall curve points.
- ``bootstrap``: percentile bootstrap CIs, by sample or by group (patient).
- ``calibration``: temperature scaling, ECE, calibration slope/intercept, reliability bins.
- ``subgroups``: metrics per subgroup with CIs and the largest gap; age bands.
- ``plots``: PNG figures and DVC-plots data.
- ``report``: ``evaluate_binary``, everything in one JSON-serialisable dict (metrics.json).
"""
