"""Heavy libraries imported from several threads at once (Prefect runs doc2query and synthesize in parallel)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

THREADS = """
import threading
from irforge.runtime.preload import preload_libraries
errors = []
def task():
    try:
        preload_libraries()
        from transformers import AutoConfig, AutoTokenizer, AutoModelForCausalLM  # noqa: F401
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=task) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(errors), errors[:1])
"""


def test_four_threads_importing_transformers_at_once_all_succeed() -> None:
    # A fresh interpreter: the race only exists on the very first import. Without the preload, 2-3 of the
    # 4 threads failed here with "cannot import name 'AutoConfig' from 'transformers'".
    done = subprocess.run([sys.executable, "-c", THREADS], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("0 "), done.stdout


LOADS = """
import sys, threading
from irforge.runtime import preload_libraries
from irforge.models import DenseEncoder, SpladeEncoder
preload_libraries()
dense, splade = sys.argv[1], sys.argv[2]
errors = []
def task(i):
    try:
        if i % 2:
            SpladeEncoder(splade, cache_dir=sys.argv[3]).encode(["a passage about wings"], 100.0)
        else:
            DenseEncoder(dense, cache_dir=sys.argv[3], use_cache=False).encode(["a passage about wings"])
    except Exception as e:
        errors.append(repr(e)[:200])
threads = [threading.Thread(target=task, args=(i,)) for i in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(errors), errors[:1])
"""


def test_models_loaded_from_several_threads_at_once_hold_real_weights(tiny_models, tmp_path) -> None:
    # The flow starts index-dense-zs, index-splade-zs, doc2query and synthesize together; without the loading
    # lock a model built in one thread kept meta tensors ("Tensor on device meta is not on the expected device").
    done = subprocess.run([sys.executable, "-c", LOADS, str(tiny_models["dense"]), str(tiny_models["splade"]),
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("0 "), done.stdout
