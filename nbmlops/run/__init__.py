"""Execute a Pipeline through papermill in one kernel, with step boundaries."""
