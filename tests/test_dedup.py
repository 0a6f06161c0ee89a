"""Near-duplicates: pHash on real copies, exact multi-index search, union-find, keepers, the Ray route."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pyarrow as pa
import pytest

from curation.decode import decode_image, read_bytes
from curation.dedup import (
    DedupConfig,
    as_unsigned,
    choose_keepers,
    components,
    hamming,
    near_pairs,
    phash64,
    resolve,
    search_units,
    unique_pairs,
    unit_pairs,
)
from curation.metrics import gray, work_copy
from pipelines.config import ConfigError, config_from_dict
from pipelines.dedup import deduplicate


def hash_of(rgb: np.ndarray) -> int:
    return phash64(gray(work_copy(rgb)))


def load(corpus: str, name: str) -> np.ndarray:
    return decode_image(read_bytes(os.path.join(corpus, name)), 10**9).rgb


def reencode(rgb: np.ndarray, scale: float, quality: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    return decode_image(buf.tobytes(), 10**9).rgb


NAMES = ["style2paints_014.jpg", "danbooregion_006.jpg", "style2paints_003.jpg", "style2paints_019.jpg",
         "danbooregion_002.png", "linedistiller_001.png", "paintsundo_003.jpg", "anime2sketch_001.jpg"]  # fmt: skip


def test_phash_finds_copies_and_the_known_pair(corpus):
    radius = DedupConfig().radius
    originals = {n: hash_of(load(corpus, n)) for n in NAMES}
    # the known near-duplicate pair of the shared corpus (same artwork, other size and encoding)
    assert (
        hamming(np.array([originals["style2paints_014.jpg"]]), np.array([originals["danbooregion_006.jpg"]]))[
            0
        ]
        <= radius
    )
    for name in NAMES[2:5]:
        rgb = load(corpus, name)
        for scale, quality in ((0.5, 60), (0.8, 90), (1.25, 75)):
            d = hamming(np.array([originals[name]]), np.array([hash_of(reencode(rgb, scale, quality))]))[0]
            assert d <= radius, (name, scale, quality, d)
    # distinct artworks stay far apart
    hs = np.array([originals[n] for n in NAMES[1:]])
    d = hamming(hs[:, None], hs[None, :])
    assert d[np.triu_indices(len(hs), 1)].min() > 3 * radius


def planted(n: int, seed: int, max_flip: int) -> np.ndarray:
    """Random hashes with neighbours planted at 0..max_flip bits, chains included."""
    rng = np.random.default_rng(seed)
    h = as_unsigned(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)).copy()
    for _ in range(n // 3):
        a, b = rng.integers(0, n, 2)
        flips = rng.choice(64, int(rng.integers(0, max_flip + 1)), replace=False)
        h[b] = h[a] ^ np.uint64(sum(1 << int(f) for f in flips))
    return h.view(np.int64)


def brute_groups(hashes: np.ndarray, radius: int) -> np.ndarray:
    u = as_unsigned(hashes)
    d = np.bitwise_count(u[:, None] ^ u[None, :])
    i, j = np.nonzero(np.triu(d <= radius, 1))
    return components(len(u), i, j)


@pytest.mark.parametrize(("radius", "parts"), [(0, 1), (3, 2), (4, 2), (4, 3), (5, 3), (6, 3), (8, 4)])
def test_multi_index_search_is_exact(radius, parts):
    h = planted(1500, radius * 10 + parts, radius + 2)
    i, j = near_pairs(h, radius, parts)
    assert np.all(i < j) and np.all(hamming(h[i], h[j]) <= radius)
    np.testing.assert_array_equal(components(len(h), i, j), brute_groups(h, radius))


def test_prefix_units_partition_the_work():
    """The Ray route's units (substring x key prefix) find exactly what one unit per substring finds."""
    h = as_unsigned(planted(1200, 7, 6))
    whole = unique_pairs(
        *map(
            np.concatenate,
            zip(*[unit_pairs(h, radius=4, parts=3, unit=u) for u in search_units(3, 0)], strict=True),
        )
    )
    split = [unit_pairs(h, radius=4, parts=3, unit=u, prefix_bits=3) for u in search_units(3, 3)]
    assert len(split) == 3 * 8
    parts = unique_pairs(*map(np.concatenate, zip(*split, strict=True)))
    np.testing.assert_array_equal(whole[0], parts[0])
    np.testing.assert_array_equal(whole[1], parts[1])


def test_many_identical_hashes_stay_cheap():
    h = np.full(20000, 12345, np.int64)
    i, j = near_pairs(h, 4, 3)
    assert len(i) == 19999  # each copy linked once to the first, not 2e8 pairs
    assert (components(len(h), i, j) == 0).all()


def test_union_find_chains_and_keepers():
    groups = components(7, np.array([0, 2, 3, 5]), np.array([1, 3, 4, 6]))
    assert groups.tolist() == [0, 0, 2, 2, 2, 5, 5]
    chain = components(5, np.array([3, 2, 1, 0]), np.array([4, 3, 2, 1]))  # a path given back to front
    assert (chain == 0).all()
    score = np.array([0.1, 0.9, np.nan, 0.5, 0.5, 0.2, 0.2])
    pixels = np.array([1, 1, 9, 1, 4, 1, 1])
    seq = np.arange(7)
    keeper = choose_keepers(groups, score, pixels, seq)
    # best score; a missing score loses; equal scores -> more pixels; then the earlier input
    assert keeper.tolist() == [1, 1, 4, 4, 4, 5, 5]


def test_resolve_marks_exact_and_near():
    sha = np.array(["a", "a", "b", "c", "d"], dtype=object)
    pairs = (np.array([1]), np.array([2]))  # near pair between 1 and 2; 0 and 1 are byte-identical
    r = resolve(pairs, sha, np.array([0.9, 0.1, 0.5, 0.3, 0.3]), np.ones(5), np.arange(5))
    assert r.keeper.tolist() == [0, 0, 0, 3, 4]
    assert r.exact.tolist() == [True, True, False, True, True]
    assert r.dropped.tolist() == [False, True, True, False, False]


def kept_table(hashes: np.ndarray, scores: np.ndarray) -> pa.Table:
    n = len(hashes)
    return pa.table({
        "seq": np.arange(n), "key": [f"s_{k}" for k in range(n)], "source": ["s"] * n,
        "source_id": [str(k) for k in range(n)], "location": [f"/x/{k}.jpg" for k in range(n)],
        "phash": hashes, "quality_score": scores, "width": np.full(n, 800), "height": np.full(n, 600),
        "sha256": [f"{k:064x}" for k in range(n)],
    })  # fmt: skip


def test_deduplicate_local_and_ray_routes_agree(ray_cluster):
    h = planted(3000, 3, 6)
    scores = np.random.default_rng(0).random(len(h))
    local_kept, local_rejects, local = deduplicate(kept_table(h, scores), DedupConfig())
    ray_kept, ray_rejects, remote = deduplicate(
        kept_table(h, scores), DedupConfig(ray_threshold=100, ray_prefix_bits=2)
    )
    assert (local["route"], remote["route"]) == ("local", "ray")
    assert local["dropped"] > 100 and local_rejects == ray_rejects
    assert local_kept["key"].to_pylist() == ray_kept["key"].to_pylist()
    assert local_kept.num_rows + len(local_rejects) == len(h)
    kept_keys = set(local_kept["key"].to_pylist())
    by_key = {k: s for k, s in zip(kept_table(h, scores)["key"].to_pylist(), scores, strict=True)}
    for rej in local_rejects:
        assert rej["stage"] == "dedup" and rej["reason"] == "near_duplicate"
        assert rej["duplicate_of"] in kept_keys and by_key[rej["duplicate_of"]] >= by_key[rej["key"]]
    # no kept pair lies within the radius
    kh = local_kept["phash"].to_numpy()
    assert len(near_pairs(kh, 4, 3)[0]) == 0


def test_dedup_config_checks():
    assert config_from_dict({"dedup": {"radius": 5, "ray_threshold": 10}}).dedup.radius == 5
    for bad in ({"radius": 40}, {"parts": 1, "radius": 8}, {"ray_prefix_bits": 20}, {"radius": "4"}):
        with pytest.raises(ConfigError):
            config_from_dict({"dedup": bad})
