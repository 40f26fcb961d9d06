"""Monitoring a served model: reference profiles of training data, input drift, reports.

- :mod:`nbmlops.capture.profile`: ``build_profile`` (stored at promotion), ``sample_frame``.
- :mod:`nbmlops.monitor.drift`: ``check_drift`` -> ``DriftResult`` (PSI, KS, chi-square, JS).
- :mod:`nbmlops.monitor.report`: the self-contained HTML report and the JSON result.
"""
