"""The content-addressed step cache: keys (``keys``) and entries on disk (``store``)."""
