"""A registered model as a BentoML service: build, serve, read the monitor logs back."""
