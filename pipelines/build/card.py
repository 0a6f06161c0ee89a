"""OUT/README.md, the Hugging Face dataset card: written after every write of shards.json (the build,
each append and retry, reweight) and rebuilt by the repair."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from groundwork.contract import TXT_SINCE_CONTRACT
from sharding.layout import Layout
from sharding.samplejson import dataset_card


def dataset_card_bytes(layout: Layout, config: Mapping[str, Any], contract: int) -> bytes:
    """OUT/README.md for the build as it stands: its features (``config``: the build's config as a
    dict) and its fingerprint, the sha256 of shards.json (so HF never serves a cached other build)."""
    fingerprint = hashlib.sha256(layout.read_bytes(layout.shards_json)).hexdigest()
    card = dataset_card(
        [e["name"] for e in config["extractors"]],
        config.get("shards", {}).get("image_format", "jpg"),
        bool(config.get("augment", {}).get("enabled", False)),  # older builds' configs may lack it
        fingerprint,
        txt=contract >= TXT_SINCE_CONTRACT,
    )
    return card.encode("utf-8")


def write_dataset_card(layout: Layout, config: Mapping[str, Any], contract: int) -> None:
    """Called after every write of shards.json: the build, each append and retry, and reweight (a
    no-op there, as weights change no row); the repair rebuilds it with ``dataset_card_bytes``."""
    layout.write_bytes(layout.dataset_card, dataset_card_bytes(layout, config, contract))
