"""``make demo`` on a fresh machine (no ../shared): it builds from drawn scenes, never from photographs."""

from __future__ import annotations

import os

import numpy as np

from curation.scan import ScanSettings, scan_rows
from curation.sources.folder import iter_folder
from pipelines import demo


def test_without_shared_the_demo_draws_illustrations_the_build_keeps(tmp_path, monkeypatch):
    monkeypatch.setenv("LINEPAIRS_SHARED", str(tmp_path / "no-shared"))  # a fresh machine
    folder = demo.demo_images(str(tmp_path))
    assert folder == str(tmp_path / "demo-images")
    records = [r.to_row() for r in iter_folder("demo", folder)]
    assert len(records) == 8 and all(r["tags_general"] for r in records)  # each with its caption
    rows = scan_rows(records, ScanSettings())
    assert [r["reason"] for r in rows if r["status"] != "kept"] == []  # drawn art passes every rule
    assert min(r["illustration"] for r in rows) > 0.9
    a, b = demo.draw_scene(3), demo.draw_scene(3)
    assert np.array_equal(a, b) and not np.array_equal(a, demo.draw_scene(4))  # seeded, and varied


def test_with_shared_the_demo_uses_the_corpus(shared, corpus, monkeypatch):
    monkeypatch.setenv("LINEPAIRS_SHARED", shared)
    assert os.path.samefile(demo.demo_images("/nonexistent-workdir"), corpus)
