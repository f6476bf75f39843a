"""How work runs, not what it computes: progress bars and logging, sharding over Dask, and importing the
heavy libraries once before tasks run in parallel threads, and the core budget."""

from irforge.runtime.cores import available_cores, stage_share, thread_share, training_threads
from irforge.runtime.partition import map_calls, map_partitions, on_dask_worker, partitions_hint
from irforge.runtime.preload import model_loading, preload_libraries
from irforge.runtime.progress import progress, setup_logging

__all__ = ["available_cores", "map_calls", "map_partitions", "model_loading", "on_dask_worker", "partitions_hint",
           "preload_libraries", "progress", "setup_logging", "stage_share", "thread_share", "training_threads"]
