"""The loader's stages (sharding/loading/) composed by hand over a real build give what the stream gives.

population -> sampler -> reader -> decode -> batch, each used on its own: the same keys without
decoding, the same arrays when decoded, the same whole samples by key; and the typed options
object is the keyword call.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from sharding.loader import BatchStream, LoaderError, LoaderOptions, batches
from sharding.loading import lookup
from sharding.loading.batch import assemble
from sharding.loading.decode import Decoder, decode_pair
from sharding.loading.extractors import ExtractorChoice
from sharding.loading.population import load_population
from sharding.loading.reader import ShardReader
from sharding.loading.sampler import Sampler

from .weighted_builds import shared_build


@pytest.fixture(scope="module")
def build(tmp_path_factory, ray_cluster) -> str:
    return shared_build(tmp_path_factory)


@pytest.mark.parametrize(
    "mode",
    [
        {"resampled": True},
        {"resampled": False, "epoch": 2},
        {"resampled": False, "weighted": False, "rank": 1, "world_size": 3},
    ],
    ids=["resampled", "one-pass", "unweighted-rank-1-of-3"],
)
def test_population_and_sampler_alone_draw_the_keys_the_stream_yields(build, mode):
    opts = {"seed": 5, **mode}
    rank, world = opts.pop("rank", 0), opts.pop("world_size", 1)
    streamed = list(
        itertools.islice(batches(build, 3, keys_only=True, rank=rank, world_size=world, **opts), 40)
    )
    pop, _ = load_population(build, weighted=opts.pop("weighted", True))
    sampler = Sampler(pop, 3, **opts)  # no reader, no decoder: nothing but the manifest and the weights
    drawn = []
    for j in itertools.count(rank, world):
        found = sampler.batch(j)
        if found is None or len(drawn) == 40:
            break
        bucket, rows = found
        assert {pop.buckets[b] for b in pop.bucket_of[rows]} == {pop.buckets[bucket]}  # bucket-pure
        drawn.append(pop.keys_at(rows))
    assert drawn == streamed and len(drawn) > 3


def test_stages_composed_by_hand_make_the_streams_batches(build):
    stream = batches(build, 4, seed=11, threads=2)
    expected = list(itertools.islice(stream, 5))
    pop, layout = load_population(build)
    sampler, choice = Sampler(pop, 4, seed=11), ExtractorChoice(pop, 11)
    reader, decoder = ShardReader(layout), Decoder(threads=2)
    for j, want in enumerate(expected):
        bucket, rows = sampler.batch(j)
        extractors = choice.choose(j, rows)
        loaded = decoder.load_all(reader, [pop.shard(r) for r in rows], pop.keys_at(rows), extractors)
        got = assemble(pop.buckets[bucket], loaded, extractors, decode=True, state=want.state)
        assert got.keys == want.keys and got.bucket == want.bucket and got.extractors == want.extractors
        assert got.meta == want.meta
        assert np.array_equal(got.images, want.images) and np.array_equal(got.lines, want.lines)
    # the reader alone: the encoded members, which the decode stage turns into the stream's arrays
    key, extractor = expected[0].keys[0], expected[0].extractors[0]
    files = reader.sample(pop.shard(lookup.rows_of(pop, [key])[0]), key, [extractor])
    assert files.image[:2] == b"\xff\xd8" and files.drawings[extractor][:4] == b"\x89PNG"
    assert np.array_equal(decode_pair(files, extractor).image, expected[0].images[0])
    reader.close()


def test_random_access_is_its_own_piece(build):
    pop, layout = load_population(build)
    keys = pop.keys_at(np.array([4, 0, 9]))
    rows = lookup.rows_of(pop, [keys[0], "no/such-key", keys[2]])
    assert rows == [4, None, 9]
    reader = ShardReader(layout)
    whole = lookup.samples(pop, reader, keys, build)
    via_stream = batches(build, 1, keys_only=True).samples(keys)
    for a, b in zip(whole, via_stream, strict=True):
        assert a["key"] == b["key"] and a["meta"] == b["meta"] and np.array_equal(a["image"], b["image"])
        assert set(a["lines"]) == set(b["lines"]) == set(pop.extractors(lookup.rows_of(pop, [a["key"]])[0]))
        assert all(np.array_equal(a["lines"][n], b["lines"][n]) for n in a["lines"])
    with pytest.raises(LoaderError, match="no sample no/such-key"):
        lookup.samples(pop, reader, ["no/such-key"], build)


def test_a_skipped_sample_is_a_gap_the_batch_stage_leaves_out(build):
    pop, layout = load_population(build)
    reader = ShardReader(layout)
    rows = pop.members[0][:3]
    shards, keys = [pop.shard(r) for r in rows], pop.keys_at(rows)
    keys[1] = "not/in-this-shard"
    extractors = [pop.extractors(r)[0] for r in rows]
    with pytest.raises(LoaderError, match="not/in-this-shard"):
        Decoder(threads=1).load_all(reader, shards, keys, extractors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = Decoder(decode=False, skip_bad_shards=True, threads=1).load_all(
            reader, shards, keys, extractors
        )
    assert loaded[1] is None and "skipping sample not/in-this-shard" in str(caught[0].message)
    batch = assemble(pop.buckets[0], loaded, ["a", "b", "c"], decode=False, state={})
    assert batch.keys == [keys[0], keys[2]] and batch.extractors == ["a", "c"] and len(batch.image_bytes) == 2


def test_the_options_object_is_the_keyword_call(build):
    opts = LoaderOptions(seed=3, resampled=False, weighted=False, drop_last=True, keys_only=True)
    by_object = list(BatchStream(build, 2, opts))
    by_keyword = list(
        batches(build, 2, seed=3, resampled=False, weighted=False, drop_last=True, keys_only=True)
    )
    assert by_object == by_keyword and by_object
    # keywords override the object; the state names the settings either way
    overridden = BatchStream(build, 2, opts, seed=4)
    assert overridden.options.seed == 4 and overridden.state_dict()["seed"] == 4 and opts.seed == 3
    with pytest.raises(LoaderError, match="seed must be a non-negative integer"):
        LoaderOptions(seed=-1)
    with pytest.raises(LoaderError, match="epoch_draws is for one-pass mode"):
        LoaderOptions(epoch_draws=10)
    with pytest.raises(TypeError):
        BatchStream(build, 2, no_such_option=1)
    with pytest.raises(TypeError, match="pass a LoaderOptions to BatchStream"):
        batches(build, 2, options=opts)  # batches' own seed=0 would silently replace the object's
