"""sharding.loader over a real two-source build: weights realised, bucket purity, resume, splits, bad shards."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import warnings

import numpy as np
import pytest

from sharding.loader import LoaderError, LoaderStateError, ShardError, batches

from .weighted_builds import shared_build, weighted_manifest


@pytest.fixture(scope="module")
def build(tmp_path_factory, ray_cluster) -> str:
    return shared_build(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(build) -> dict[str, dict]:
    return {r["key"]: r for r in weighted_manifest(build)}


def _intended(manifest, field) -> dict[str, float]:
    total = sum(r["weight"] for r in manifest.values())
    out: dict[str, float] = {}
    for r in manifest.values():
        out[field(r)] = out.get(field(r), 0.0) + r["weight"] / total
    return out


FIELDS = {
    "source": lambda r: r["source"],
    "tier": lambda r: r["tier"],
    "bucket": lambda r: f"{r['bucket_w']}x{r['bucket_h']}",
}


def test_200k_draws_realise_the_intended_shares_and_every_batch_is_one_bucket(build, manifest):
    counts = {name: {} for name in FIELDS}
    drawn = 0
    for keys in batches(build, 64, seed=3, keys_only=True):
        assert len(keys) == 64
        assert len({(manifest[k]["bucket_w"], manifest[k]["bucket_h"]) for k in keys}) == 1
        for k in keys:
            for name, field in FIELDS.items():
                counts[name][field(manifest[k])] = counts[name].get(field(manifest[k]), 0) + 1
        drawn += len(keys)
        if drawn >= 200_000:
            break
    for name, field in FIELDS.items():
        intended = _intended(manifest, field)
        assert len(intended) >= 2, name  # the build has several sources, tiers and buckets
        for label, share in intended.items():
            realised = counts[name].get(label, 0) / drawn
            assert abs(realised - share) < 0.01, (
                f"{name} {label}: realised {realised:.4f}, intended {share:.4f}"
            )
    # The build is small: every sample is drawn, each about as often as its weight says.
    total = sum(r["weight"] for r in manifest.values())
    per_key = {}
    for keys in itertools.islice(batches(build, 64, seed=3, keys_only=True), 200_000 // 64):
        for k in keys:
            per_key[k] = per_key.get(k, 0) + 1
    for k, r in manifest.items():
        expected = 200_000 // 64 * 64 * r["weight"] / total
        assert abs(per_key.get(k, 0) - expected) < 6 * np.sqrt(expected) + 64, k


def test_decoded_batches(build, manifest):
    stream = batches(build, 6, seed=1, threads=2)
    for batch in itertools.islice(stream, 12):
        w, h = batch.bucket
        assert batch.images.shape == (6, h, w, 3) and batch.images.dtype == np.uint8
        assert batch.lines.shape == (6, h, w) and batch.lines.dtype == np.uint8
        assert len(batch.keys) == len(batch.meta) == len(batch.extractors) == 6
        for key, meta, ex in zip(batch.keys, batch.meta, batch.extractors, strict=True):
            assert meta["key"] == key and tuple(meta["bucket"]) == (w, h)
            assert ex in manifest[key]["extractors"]
            assert meta["key"] == key and "weight" not in meta  # weights live in weight versions
            # the JSON holds tag strings (contract 3); the loader gives lists, as the manifest has
            assert all(isinstance(v, list) for v in meta["tags"].values())
            assert sorted(t for v in meta["tags"].values() for t in v) == sorted(manifest[key]["tags"])
        assert (batch.lines == 255).mean() > 0.3  # white paper, dark lines
    # decode=False gives the members' bytes; keys are the same as in keys_only mode.
    raw = next(iter(batches(build, 6, seed=1, decode=False)))
    first_keys = next(iter(batches(build, 6, seed=1, keys_only=True)))
    assert raw.images is None and raw.keys == first_keys
    assert raw.image_bytes[0][:3] == b"\xff\xd8\xff" and raw.line_bytes[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_extractor_choice_is_seeded_and_configurable(build):
    chosen = [e for b in itertools.islice(batches(build, 8, seed=5, threads=1), 40) for e in b.extractors]
    again = [e for b in itertools.islice(batches(build, 8, seed=5, threads=1), 40) for e in b.extractors]
    assert chosen == again
    assert 0.35 < chosen.count("canny") / len(chosen) < 0.65  # uniform between canny and xdog
    only = next(iter(batches(build, 8, extractor="xdog")))
    assert set(only.extractors) == {"xdog"}
    skewed = [
        e
        for b in itertools.islice(batches(build, 8, extractor_probs={"canny": 0.9, "xdog": 0.1}), 40)
        for e in b.extractors
    ]
    assert skewed.count("canny") / len(skewed) > 0.8
    with pytest.raises(LoaderError, match="hed"):
        batches(build, 8, extractor="hed")


def test_a_resumed_stream_continues_the_exact_sequence(build):
    full = list(itertools.islice(batches(build, 16, seed=9, keys_only=True), 300))
    stream = batches(build, 16, seed=9, keys_only=True)
    first = list(itertools.islice(stream, 130))
    state = json.loads(json.dumps(stream.state_dict()))  # survives a checkpoint file
    rest = list(itertools.islice(batches(build, 16, seed=9, keys_only=True, state=state), 170))
    assert first + rest == full
    # Decoded batches carry their own state: resume after the 3rd batch.
    decoded = list(itertools.islice(batches(build, 4, seed=2), 5))
    resumed = list(itertools.islice(batches(build, 4, seed=2, state=decoded[2].state), 2))
    assert [b.keys for b in resumed] == [b.keys for b in decoded[3:5]]
    assert np.array_equal(resumed[0].images, decoded[3].images)
    with pytest.raises(LoaderStateError, match="seed: saved 9, now 8"):
        batches(build, 16, seed=8, keys_only=True, state=state)


def test_ranks_split_the_stream_without_overlap(build):
    full = list(itertools.islice(batches(build, 8, seed=4, keys_only=True), 60))
    ranks = [
        list(itertools.islice(batches(build, 8, seed=4, keys_only=True, rank=r, world_size=3), 20))
        for r in range(3)
    ]
    assert [ranks[j % 3][j // 3] for j in range(60)] == full


def test_dataloader_workers_keep_the_sequence_and_resume(build):
    torch = pytest.importorskip("torch")
    stream = batches(build, 8, seed=6, keys_only=True)
    full = list(itertools.islice(batches(build, 8, seed=6, keys_only=True), 30))
    loader = torch.utils.data.DataLoader(stream.torch_dataset(), batch_size=None, num_workers=2)
    assert list(itertools.islice(iter(loader), 30)) == full
    decoded = batches(build, 4, seed=6)
    loader = torch.utils.data.DataLoader(decoded.torch_dataset(), batch_size=None, num_workers=2)
    got = list(itertools.islice(iter(loader), 5))
    assert [b.state["position"] for b in got] == [1, 2, 3, 4, 5]
    # Resume from the 3rd batch with a different number of workers: same continuation.
    again = batches(build, 4, seed=6, state=got[2].state)
    loader = torch.utils.data.DataLoader(again.torch_dataset(), batch_size=None, num_workers=3)
    assert [b.keys for b in itertools.islice(iter(loader), 2)] == [b.keys for b in got[3:5]]
    # Spawned workers (macOS, Ray Train) unpickle the stream in a fresh interpreter.
    spawned = torch.utils.data.DataLoader(
        again.torch_dataset(), batch_size=None, num_workers=1, multiprocessing_context="spawn"
    )
    assert [b.keys for b in itertools.islice(iter(spawned), 2)] == [b.keys for b in got[3:5]]


def test_one_pass_mode(build, manifest):
    once = batches(build, 5, seed=1, keys_only=True, resampled=False, weighted=False)
    keys = [k for ks in once for k in ks]
    assert sorted(keys) == sorted(manifest)  # every sample exactly once, last partial batches kept
    assert len(once) == 8  # per bucket ceil(samples / 5): 10, 11, 11 samples
    assert list(once) == []  # a stream continues where it stopped: this pass is over
    weighted = batches(build, 4, seed=1, keys_only=True, resampled=False, epoch_draws=3200)
    counts: dict[str, int] = {}
    for ks in weighted:
        assert len({(manifest[k]["bucket_w"], manifest[k]["bucket_h"]) for k in ks}) == 1
        for k in ks:
            counts[k] = counts.get(k, 0) + 1
    total = sum(r["weight"] for r in manifest.values())
    for k, r in manifest.items():  # systematic sampling: within one draw of expected (less dropped tails)
        assert abs(counts.get(k, 0) - 3200 * r["weight"] / total) <= 1 + 3, k
    # Epochs differ; the same epoch repeats.
    a = list(batches(build, 5, seed=1, keys_only=True, resampled=False, epoch=1))
    assert a == list(batches(build, 5, seed=1, keys_only=True, resampled=False, epoch=1))
    assert a != list(batches(build, 5, seed=1, keys_only=True, resampled=False, epoch=2))


def test_missing_and_truncated_shards_are_named_and_can_be_skipped(build, tmp_path, manifest):
    out = str(tmp_path / "copy")
    shutil.copytree(build, out)
    shards = json.load(open(os.path.join(out, "shards.json")))["shards"]
    gone, cut = shards[0]["path"], shards[-1]["path"]
    os.remove(os.path.join(out, gone))
    with open(os.path.join(out, cut), "r+b") as fh:
        fh.truncate(shards[-1]["bytes"] // 2)
    with pytest.raises(ShardError) as err:
        batches(out, 4, keys_only=True)
    assert (
        f"{gone}: missing" in str(err.value)
        and f"{cut}: " in str(err.value)
        and "truncated" in str(err.value)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream = batches(out, 4, skip_bad_shards=True)
    assert any(gone in str(w.message) for w in caught)
    bad = {k for k, r in manifest.items() if r["shard"] in (gone, cut)}
    for b in itertools.islice(stream, 50):
        assert not set(b.keys) & bad and len(b.keys) == 4


def test_a_corrupt_member_is_named(build, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(build, out)
    entry = json.load(open(os.path.join(out, "shards.json")))["shards"][0]
    path = os.path.join(out, entry["path"])
    data = bytearray(open(path, "rb").read())
    data[512:2048] = b"\0" * 1536  # wipe the first illustration's bytes; size unchanged
    open(path, "wb").write(bytes(data))
    stream = batches(out, 8, seed=0, resampled=False, weighted=False, drop_last=False)
    with pytest.raises(ShardError, match=entry["path"]):
        for _ in stream:
            pass


def test_urls_through_pyarrow_and_fsspec(build):
    fsspec = pytest.importorskip("fsspec")
    local = list(itertools.islice(batches(build, 4, seed=2, keys_only=True), 10))
    assert list(itertools.islice(batches("file://" + build, 4, seed=2, keys_only=True), 10)) == local
    mem = fsspec.filesystem("memory")
    for root, _, files in os.walk(build):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), build)
            if not rel.startswith(("_state", "scan")):
                mem.pipe(f"/lp-build/{rel}", open(os.path.join(root, name), "rb").read())
    remote = batches("memory://lp-build", 4, seed=2)
    assert [b.keys for b in itertools.islice(remote, 10)] == local
    assert next(iter(batches("memory://lp-build", 4, seed=2))).images.shape[0] == 4


def test_bad_arguments(build, tmp_path):
    with pytest.raises(LoaderError, match="not a finished build"):
        batches(str(tmp_path), 4)
    with pytest.raises(LoaderError, match="batch_size"):
        batches(build, 0)
    with pytest.raises(LoaderError, match="rank 3"):
        batches(build, 4, rank=3, world_size=2)


def test_samples_by_key_and_the_contact_sheet_lookup(build, manifest):
    from pipelines.tools.audit import pair_samples

    stream = batches(build, 1, keys_only=True)
    keys = sorted(manifest)[:3]
    rows = stream.rows_of([keys[2], "no/such-key", keys[0]])
    assert rows[1] is None and stream.pop.key(rows[0]) == keys[2] and stream.pop.key(rows[2]) == keys[0]
    got = stream.samples(keys)
    assert [s["key"] for s in got] == keys
    for s in got:
        row = manifest[s["key"]]
        assert s["meta"]["key"] == s["key"] and s["image"].shape[:2] == (row["bucket_h"], row["bucket_w"])
        assert set(s["lines"]) and all(line.shape == s["image"].shape[:2] for line in s["lines"].values())
    with pytest.raises(LoaderError, match="no sample no/such-key"):
        stream.samples([keys[0], "no/such-key"])
    # the audit's contact sheet: one lookup for all keys, unknown keys left out, order kept
    sheet = pair_samples(build, [keys[1], "no/such-key", keys[0]], {keys[0]: [2.5, "high"]})
    assert [s["key"] for s in sheet] == [keys[1], keys[0]]
    assert sheet[1]["meta"]["weight"] == 2.5 and "weight" not in sheet[0]["meta"]
