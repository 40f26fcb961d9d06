"""Read a tagged notebook into a Pipeline: steps, their DAG, parameters."""
