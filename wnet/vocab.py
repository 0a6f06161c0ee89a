"""The tag vocabulary: one token per kept tag, per category, plus PAD, NULL and one UNK per category.

Built from a build's ``manifest.parquet`` (the ``tags_{category}`` columns) and saved as JSON inside
every checkpoint, so that a checkpoint always decodes tags the way it was trained.

Encoding: a sequence of ``max_tags`` ids that starts with NULL (an always-present token keeps
cross-attention defined when every tag is dropped), then the tags category by category, then PAD.
The unconditional input is ``[NULL, PAD, ...]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from curation.records import TAG_CATEGORIES
from sharding.layout import Layout

PAD, NULL = 0, 1
# Most identifying first, so truncation to max_tags drops general/meta tags before characters.
CATEGORY_ORDER = ("character", "copyright", "artist", "general", "meta")
assert set(CATEGORY_ORDER) == set(TAG_CATEGORIES)


@dataclass(frozen=True)
class TagVocab:
    tokens: tuple[str, ...]  # id -> token; "category:tag", or "<pad>", "<null>", "<unk:category>"

    @classmethod
    def build(
        cls, tags: Iterable[Mapping[str, Iterable[str]]], per_category: int, min_count: int = 1
    ) -> TagVocab:
        counts = {c: Counter() for c in CATEGORY_ORDER}
        for sample in tags:
            for cat in CATEGORY_ORDER:
                counts[cat].update(sample.get(cat) or ())
        tokens = ["<pad>", "<null>"] + [f"<unk:{c}>" for c in CATEGORY_ORDER]
        for cat in CATEGORY_ORDER:
            # Ties broken by name so the vocabulary does not depend on manifest row order.
            kept = sorted(
                (t for t, n in counts[cat].items() if n >= min_count), key=lambda t: (-counts[cat][t], t)
            )
            tokens += [f"{cat}:{t}" for t in sorted(kept[:per_category])]
        return cls(tuple(tokens))

    @classmethod
    def from_manifest(cls, build: Layout | str, per_category: int) -> TagVocab:
        """From the manifest of ``build`` (an OUT path or URL, or its Layout)."""
        layout = build if isinstance(build, Layout) else Layout(build)
        table = layout.read_parquet(layout.manifest, columns=[f"tags_{c}" for c in CATEGORY_ORDER])
        columns = {c: table[f"tags_{c}"].to_pylist() for c in CATEGORY_ORDER}
        rows = ({c: columns[c][i] for c in CATEGORY_ORDER} for i in range(table.num_rows))
        return cls.build(rows, per_category)

    @classmethod
    def from_json(cls, data: dict) -> TagVocab:
        return cls(tuple(data["tokens"]))

    def to_json(self) -> dict:
        return {"tokens": list(self.tokens), "categories": list(CATEGORY_ORDER)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def _index(self) -> dict[str, int]:
        index = self.__dict__.get("_index_cache")
        if index is None:
            index = {t: i for i, t in enumerate(self.tokens)}
            object.__setattr__(self, "_index_cache", index)
        return index

    def encode(self, tags: Mapping[str, Iterable[str]], max_tags: int) -> np.ndarray:
        """``{category: [tag, ...]}`` -> int64 ids of length ``max_tags``; unknown tags map to UNK."""
        index = self._index
        ids = [NULL]
        for cat in CATEGORY_ORDER:
            unk = index[f"<unk:{cat}>"]
            ids += [index.get(f"{cat}:{t}", unk) for t in (tags.get(cat) or ())]
        ids = ids[:max_tags]
        return np.array(ids + [PAD] * (max_tags - len(ids)), dtype=np.int64)

    def encode_batch(self, tags: list[Mapping[str, Iterable[str]]], max_tags: int) -> np.ndarray:
        return (
            np.stack([self.encode(t, max_tags) for t in tags]) if tags else np.zeros((0, max_tags), np.int64)
        )

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids if i not in (PAD, NULL)]


def parse_tags(text: str) -> dict[str, list[str]]:
    """``"1girl, character:hatsune_miku, artist:foo"`` -> tags by category (no prefix: general)."""
    out: dict[str, list[str]] = {c: [] for c in CATEGORY_ORDER}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        cat, sep, tag = item.partition(":")
        if sep and cat in out:
            out[cat].append(tag.strip())
        else:
            out["general"].append(item)
    return out


__all__ = ["CATEGORY_ORDER", "NULL", "PAD", "TagVocab", "parse_tags"]
