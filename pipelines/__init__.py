"""Prefect flows: the experiment DAG (the same stage functions `dvc repro` runs) and operations flows."""
