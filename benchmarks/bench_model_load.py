"""Benchmark: first conversion of the embedded GGUF vs cached load (prints a table).

Run:  .venv/bin/python -m benchmarks.bench_model_load
It converts into a fresh temporary cache (the first-start path), then loads from that cache
three times (the every-start path), and prints machine and library versions with the timings.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

from core import model as model_lib


def main() -> None:
    import torch
    import transformers

    gguf = model_lib.find_embedded_gguf()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "dense"
        t0 = time.perf_counter()
        model_lib.convert_gguf_to_dense(gguf, target)
        first = time.perf_counter() - t0
        base = model_lib.BaseModel(identity=model_lib.EMBEDDED_BASE_ID, location=str(target))
        loads = []
        for _ in range(3):
            t0 = time.perf_counter()
            model_lib.convert_gguf_to_dense(gguf, target)  # cache check (hashes the GGUF)
            model_lib.load_model(base, device="cpu")
            loads.append(time.perf_counter() - t0)
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={torch.get_num_threads()} "
          f"python={platform.python_version()} torch={torch.__version__} transformers={transformers.__version__}")
    print("| step | seconds |\n| --- | --- |")
    print(f"| first conversion (GGUF -> dense fp32 safetensors) | {first:.1f} |")
    print(f"| cached start: cache check + load (median of 3) | {statistics.median(loads):.2f} |")


if __name__ == "__main__":
    main()
