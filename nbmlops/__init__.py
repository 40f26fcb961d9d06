"""nbmlops: tag the cells of a notebook, run them as a tracked, reproducible pipeline.

In a notebook::

    import nbmlops
    df = nbmlops.read_csv("data/train.csv")      # hashed over its full content
    nbmlops.log_metric("accuracy", acc)          # on the step run and the pipeline run
    nbmlops.log_model(model, input_example=X)    # an MLflow model with its signature

From a shell: ``nbmlops run notebooks/breast_cancer.ipynb -p n_estimators=200``.
"""

from nbmlops.api import (
    log_metric,
    log_metrics,
    log_model,
    log_param,
    log_params,
    read_csv,
    read_parquet,
    read_production,
    track_data,
)
from nbmlops.exceptions import NbmlopsError

__version__ = "0.1.0"

__all__ = [
    "NbmlopsError",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "read_csv",
    "read_parquet",
    "read_production",
    "track_data",
]
