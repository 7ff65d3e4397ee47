"""gkl_jax benchmarks: ``python -m benchmarks`` runs them all (see ``benchmarks/run.py``)."""
