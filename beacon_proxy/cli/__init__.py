"""Command-line stage: the ``beacon-proxy`` command."""
