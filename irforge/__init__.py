"""irforge: build a search model for your own corpus, without relevance labels.

The shared core lives here, one subpackage per concern (see README, Architecture);
the pipeline stages live in the top-level ``stages`` package and the Prefect flows in ``pipelines``.
Imports are kept cheap: nothing heavy (torch, the JVM) loads until a stage needs it.
"""

__version__ = "0.1.0"

import os

# OpenMP threads that wait sleep instead of spinning. libgomp reads this once, when torch loads it, so it is set
# here, before any stage imports torch: with spinning waits, two training jobs on the same 2 cores took 3-5.6x
# their time alone, with sleeping waits about 1.7x (benchmarks/bench_cores.py). A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
