"""wiremap benchmarks: ``python -m benchmarks.run`` (``make bench``)."""
