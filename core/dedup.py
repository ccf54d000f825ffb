"""Duplicate detection: normalised text, word 8-gram shingles, exact all-pairs Jaccard join, grouping.

Two texts are near duplicates when the Jaccard similarity of their word 8-gram sets is at least
0.8 (texts shorter than 8 words are one shingle, so they only match exactly). Exact duplicates
(same normalised text) are a special case.

:func:`similar_pairs` finds EVERY pair above the threshold (no probabilistic misses, unlike
MinHash/LSH) with the prefix-filtering similarity join: shingles are ordered by rarity, and two sets
with Jaccard >= t must share a shingle among the first ``|x| - ceil(t*|x|) + 1`` rarest of each.
Only those prefixes are indexed, so common 8-grams ("which of the following is the most ...")
never produce candidate pairs. On the ~9k items here it takes about a second.

:class:`Groups` is a union-find over item indices; a group key is its smallest member key, so it
does not depend on input order.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from core.records import normalise

SHINGLE_WORDS = 8
THRESHOLD = 0.8


def shingles(text: str, n: int = SHINGLE_WORDS) -> frozenset[str]:
    """Word n-grams of the normalised text (the whole text as one shingle when shorter than n words)."""
    words = normalise(text).split()
    if not words:
        return frozenset()
    if len(words) < n:
        return frozenset({" ".join(words)})
    return frozenset(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _min_overlap(size: int, threshold: float) -> int:
    # round() guards against 0.8 * 15 == 12.000000000000002 making the prefix one too short.
    return max(1, math.ceil(round(threshold * size, 9)))


def similar_pairs(sets: Sequence[frozenset[str]], threshold: float = THRESHOLD) -> list[tuple[int, int, float]]:
    """All index pairs ``(i, j, jaccard)`` with ``i < j`` and Jaccard >= ``threshold`` (exact)."""
    freq: Counter[str] = Counter(s for items in sets for s in items)
    ordered = [sorted(items, key=lambda s: (freq[s], s)) for items in sets]
    # Visit sets from small to large so every indexed set is no larger than the probing one.
    visit = sorted((i for i in range(len(sets)) if sets[i]), key=lambda i: (len(sets[i]), i))
    index: dict[str, list[int]] = defaultdict(list)
    pairs: list[tuple[int, int, float]] = []
    for i in visit:
        size = len(sets[i])
        prefix = ordered[i][: size - _min_overlap(size, threshold) + 1]
        min_size = threshold * size
        candidates: set[int] = set()
        for token in prefix:
            for j in index.get(token, ()):
                if len(sets[j]) >= min_size - 1e-9:
                    candidates.add(j)
        for j in candidates:
            score = jaccard(sets[i], sets[j])
            if score >= threshold:
                pairs.append((min(i, j), max(i, j), score))
        for token in prefix:
            index[token].append(i)
    pairs.sort()
    return pairs


class Groups:
    """Union-find over ``keys``; :meth:`group_key` is the smallest key in the item's group."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        self._parent = list(range(len(keys)))

    def find(self, i: int) -> int:
        root = i
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[i] != root:  # path compression
            self._parent[i], i = root, self._parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a == b:
            return
        # The root is the member with the smallest key, so group keys are order-independent.
        if (self.keys[b], b) < (self.keys[a], a):
            a, b = b, a
        self._parent[b] = a

    def group_key(self, i: int) -> str:
        return self.keys[self.find(i)]

    def members(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.keys)):
            out[self.find(i)].append(i)
        return dict(out)


@dataclass(frozen=True)
class Match:
    """Two items whose closest texts reach the threshold, with that Jaccard score."""

    a: int
    b: int
    score: float


def item_matches(texts: Sequence[Sequence[str]], threshold: float = THRESHOLD) -> list[Match]:
    """Pairs of items (``a < b``) that are exact or near duplicates through ANY of their texts.

    ``texts[i]`` holds the texts that stand for item ``i`` (e.g. its question with options, and the
    exam question it was rewritten from).
    """
    owners: list[int] = []
    sets: list[frozenset[str]] = []
    for i, item_texts in enumerate(texts):
        for text in item_texts:
            shingled = shingles(text)
            if shingled:
                owners.append(i)
                sets.append(shingled)
    best: dict[tuple[int, int], float] = {}
    for x, y, score in similar_pairs(sets, threshold):
        a, b = sorted((owners[x], owners[y]))
        if a != b:
            best[(a, b)] = max(score, best.get((a, b), 0.0))
    return [Match(a, b, score) for (a, b), score in sorted(best.items())]


def group_items(texts: Sequence[Sequence[str]], keys: Sequence[str], threshold: float = THRESHOLD) -> tuple[Groups, list[Match]]:
    """Union-find groups of items linked by :func:`item_matches`; ``keys[i]`` is item ``i``'s stable id."""
    groups = Groups(keys)
    matches = item_matches(texts, threshold)
    for m in matches:
        groups.union(m.a, m.b)
    return groups, matches


# -- near copies that survive translation and paraphrase ---------------------------------------------
#
# Word 8-grams miss re-translated and re-worded copies of the same exam question: CasiMedicos holds
# the same cases more than once in different English translations (word 8-gram Jaccard 0.16-0.79),
# and medical-o1 rewrote MedMCQA questions in its own words. Two more measures catch them:
#
# * character 5-gram Jaccard >= 0.5 of the question (alone, and with its options): spelling- and
#   order-level changes keep most character 5-grams. On the real data every CasiMedicos re-translation
#   pair scores >= 0.54, and the next-highest cross pair 0.44 (measured in the PR that added this);
# * embedding cosine >= 0.80 of the questions (all-MiniLM-L6-v2, :mod:`core.embedding`): paraphrases
#   such as a rewritten MedMCQA vignette score 0.81-0.93. Some pairs above it are only on the same
#   topic; they cost a training item each, which is the cheap side of the trade.
#
# Only pairs with at least one reasoning (trainable) item are searched: bank items may resemble each
# other freely.

CHAR_GRAMS = 5
CHAR_THRESHOLD = 0.5
EMBED_THRESHOLD = 0.80


@dataclass(frozen=True)
class NearCopy:
    """Items ``a < b`` whose texts are near copies by ``measure`` (``char5`` or ``embedding``)."""

    a: int
    b: int
    score: float
    measure: str


def char_grams(text: str, n: int = CHAR_GRAMS) -> set[str]:
    """Character n-grams of the normalised text (the text itself when shorter than n)."""
    t = normalise(text)
    if not t:
        return set()
    return {t[i:i + n] for i in range(max(1, len(t) - n + 1))}


def _best_pairs(owners: list[int], scored_blocks: Any, threshold: float, measure: str) -> dict[tuple[int, int], NearCopy]:
    """The best score per item pair over blocks of (text rows, row-by-all-texts score matrix)."""
    import numpy as np

    best: dict[tuple[int, int], NearCopy] = {}
    for rows, block in scored_blocks:
        for r, c in zip(*np.nonzero(block >= threshold)):
            a, b = owners[rows[r]], owners[c]
            if a == b:
                continue
            a, b = min(a, b), max(a, b)
            score = float(block[r, c])
            if (a, b) not in best or score > best[(a, b)].score:
                best[(a, b)] = NearCopy(a, b, round(score, 4), measure)
    return best


def _flatten(texts: Sequence[Sequence[str]], n_search: int) -> tuple[list[int], list[str], list[int]]:
    owners: list[int] = []
    flat: list[str] = []
    for i, item_texts in enumerate(texts):
        for text in item_texts:
            if text.strip():
                owners.append(i)
                flat.append(text)
    return owners, flat, [k for k, i in enumerate(owners) if i < n_search]


def char_copies(texts: Sequence[Sequence[str]], n_search: int, *, threshold: float = CHAR_THRESHOLD, block: int = 256) -> dict[tuple[int, int], NearCopy]:
    """Item pairs, at least one among the first ``n_search``, with character 5-gram Jaccard >= ``threshold``.

    ``texts[i]``: the texts standing for item ``i``; a pair's score is its best over those texts.
    Exact (sparse matrix products), about two seconds for the ~9k items here.
    """
    import numpy as np
    from scipy import sparse

    owners, flat, search_rows = _flatten(texts, n_search)
    vocab: dict[str, int] = {}
    indptr, indices = [0], []
    for text in flat:
        indices.extend(vocab.setdefault(g, len(vocab)) for g in char_grams(text))
        indptr.append(len(indices))
    grams = sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(flat), len(vocab)))
    sizes = np.diff(grams.indptr).astype(np.float32)

    def blocks():
        for start in range(0, len(search_rows), block):
            rows = search_rows[start:start + block]
            inter = (grams[rows] @ grams.T).toarray()
            yield rows, inter / (sizes[rows][:, None] + sizes[None, :] - inter)

    return _best_pairs(owners, blocks(), threshold, "char5")


def embedding_copies(
    texts: Sequence[Sequence[str]], n_search: int, embed: Any, *, threshold: float = EMBED_THRESHOLD, block: int = 1024
) -> dict[tuple[int, int], NearCopy]:
    """Item pairs, at least one among the first ``n_search``, whose texts' embedding cosine >= ``threshold``.

    ``embed``: a callable from a list of texts to unit vectors (``core.embedding.Embedder.encode``).
    """
    import numpy as np

    owners, flat, search_rows = _flatten(texts, n_search)
    vectors = np.asarray(embed(flat), dtype=np.float32)

    def blocks():
        for start in range(0, len(search_rows), block):
            rows = search_rows[start:start + block]
            yield rows, vectors[rows] @ vectors.T

    return _best_pairs(owners, blocks(), threshold, "embedding")
