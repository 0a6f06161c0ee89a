"""The docs state the same defaults and reasons as the code (one place for each fact, checked)."""

from __future__ import annotations

import json
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


ELSEWHERE = {
    "filters": "curation.md",
    "metrics": "curation.md",
    "quality": "curation.md",
    "dedup": "curation.md",
}


def test_config_doc_lists_every_key_with_its_default():
    text = open(os.path.join(DOCS, "config.md")).read()
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `?([^`|]+?)`? \|", text, re.M))
    config = BuildConfig().to_dict()
    config.pop("extractors")
    config.pop("sources")
    config.pop("scorers")  # tables per scorer, documented in curation.md
    for section, doc in ELSEWHERE.items():  # curation sections: documented with their reasoning
        table = config.pop(section)
        text_of = open(os.path.join(DOCS, doc)).read()
        for key in table:
            assert f"`{key}`" in text_of, f"docs/{doc} lacks {section}.{key}"
        assert f"[{section}]" in text and doc in text, (
            f"docs/config.md does not point to docs/{doc} for [{section}]"
        )
    for key, value in _flatten(config):
        assert key in rows, f"docs/config.md lacks {key}"
        shown = rows[key].strip('"')
        assert shown in (str(value), json.dumps(value)), (
            f"docs/config.md says {key} = {shown}, code says {value}"
        )


def test_rejects_doc_explains_every_reason_under_its_stage():
    text = open(os.path.join(DOCS, "rejects.md")).read()
    sections = re.split(r"^## stage `", text, flags=re.M)[1:]
    by_stage = {s.split("`", 1)[0]: s for s in sections}
    for stage, reasons in REJECT_REASONS.items():
        assert stage in by_stage, f"docs/rejects.md has no section for stage {stage}"
        for reason in reasons:
            assert f"`{reason}`" in by_stage[stage], f"docs/rejects.md lacks {stage}/{reason}"
