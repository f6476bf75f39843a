"""irforge: build a search model for your own corpus, without relevance labels.

The shared core lives here, one subpackage per concern (see README, Architecture);
the pipeline stages live in the top-level ``stages`` package and the Prefect flows in ``pipelines``.
Imports are kept cheap: nothing heavy (torch, the JVM) loads until a stage needs it.
"""

__version__ = "0.1.0"
