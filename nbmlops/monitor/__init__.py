"""Monitoring a served model: input drift against the training data, reports, retraining.

- :mod:`nbmlops.capture.profile`: ``build_profile`` (stored at promotion), ``sample_frame``.
- :mod:`nbmlops.monitor.thresholds`: ``Thresholds`` and their defaults, defined once.
- :mod:`nbmlops.monitor.drift`: ``check_drift`` -> ``DriftResult`` (Wasserstein, KS, JS,
  chi-square, missing share; Holm across them; a verdict per feature).
- :mod:`nbmlops.monitor.report`: the self-contained HTML report and the JSON result.
- :mod:`nbmlops.monitor.check`: ``check_and_retrain`` -> ``DriftOutcome``: compare, write the
  reports, retrain on drift (``retrain.py``); what ``nbmlops monitor drift`` and
  ``nbmlops ci --on-drift`` call.
"""
