"""The docs state the same defaults and reasons as the code (one place for each fact, checked)."""

from __future__ import annotations

import os
import re

from curation.records import REJECT_REASONS
from pipelines.config import BuildConfig

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def _flatten(d, prefix=""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_config_doc_lists_every_key_with_its_default():
    text = open(os.path.join(DOCS, "config.md")).read()
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `?([^`|]+?)`? \|", text, re.M))
    config = BuildConfig().to_dict()
    config.pop("extractors")
    for key, value in _flatten(config):
        assert key in rows, f"docs/config.md lacks {key}"
        shown = rows[key].strip('"')
        assert shown == str(value), f"docs/config.md says {key} = {shown}, code says {value}"


def test_output_doc_lists_every_reject_reason():
    text = open(os.path.join(DOCS, "output.md")).read()
    for stage, reasons in REJECT_REASONS.items():
        for reason in reasons:
            assert re.search(rf"\| {stage} \| `{reason}` \|", text), f"docs/output.md lacks {stage}/{reason}"
