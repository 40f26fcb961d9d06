"""Scheduled CI for notebook pipelines: ``nbmlops ci`` and ``nbmlops init-ci``.

``core.py`` runs the configured pipelines (``pipelines.py``: the run, its gates and test
commands), ``promotion.py`` promotes and builds what passed, ``drift.py`` is the drift loop
(``monitor.check.check_and_retrain``, then the retrained run's checks and promotion on the
fresh data), ``reports.py`` writes JUnit XML and the Markdown summary,
``capture/orphans.py`` ends runs whose driver was killed, ``workflow.py`` writes the GitHub
Actions workflow from ``workflow.yml``. The configuration is ``nbmlops/config.py``.
"""
