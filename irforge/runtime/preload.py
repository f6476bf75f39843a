"""Import the heavy libraries once, under a lock, before stages run in parallel threads.

transformers resolves its public names lazily on first attribute access, and that first access is not
thread-safe: two Prefect tasks (doc2query and synthesize run concurrently in the flow) doing
``from transformers import AutoConfig`` at the same moment failed with ``ImportError: cannot import name``
(2 of 4 plain threads failed when tried). Every task calls :func:`preload_libraries` first; the first caller
does the imports, the others wait for it, and afterwards every name is already resolved.
"""

from __future__ import annotations

import importlib
import threading

_LOCK = threading.Lock()
_DONE = False

# Loading weights is not thread-safe either: transformers builds a model on the meta device under process-wide
# patches of torch, so a model loaded in a second thread at the same moment kept meta tensors ("Tensor on device
# meta is not on the expected device cpu!" in the flow, where index-dense-zs, index-splade-zs, doc2query and
# synthesize start together). Every weight load holds this lock; inference runs in parallel as before.
model_loading = threading.Lock()

# (module, names the code imports from it lazily). Touching a name resolves it for every later import.
HEAVY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ()),
    ("transformers", ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSeq2SeqLM",
                      "AutoModelForMaskedLM", "DynamicCache", "EncoderDecoderCache",
                      "get_linear_schedule_with_warmup")),
    ("sentence_transformers", ("SentenceTransformer",)),
)


def preload_libraries() -> None:
    global _DONE
    if _DONE:
        return
    with _LOCK:
        if _DONE:
            return
        for module, names in HEAVY:
            loaded = importlib.import_module(module)
            for name in names:
                getattr(loaded, name)
        _DONE = True
