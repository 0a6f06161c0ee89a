"""The deepghs ONNX scorers against dghs-imgutils' own functions, and their verdicts.

Fidelity: tiny ONNX models exported here with each published model's interface sit in an offline
Hugging Face cache; imgutils (in a child process, ``HF_HUB_OFFLINE=1``) and our scorers (on the
snapshot folders) score the same real images, and every value agrees to 1e-5.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation import scorers
from curation.decode import decode_image, read_bytes
from curation.metrics import MetricThresholds, work_copy
from curation.scorers.apply import defer_illustration, judge
from groundwork.checkpoints import WeightsError
from groundwork.files import sha256_file

from .helpers import cli, write_config
from .onnx_models import PUBLISHED, hub_cache, write_model

pytest.importorskip("onnxruntime")
ONNX_SCORERS = sorted(PUBLISHED)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("hf_home"))


@pytest.fixture(scope="module")
def hub(hf_home) -> dict[str, str]:
    """Scorer name -> its model's snapshot folder in the offline cache (our ``weights`` folder)."""
    return hub_cache(hf_home, seed=3)


@pytest.fixture(scope="module")
def pictures(corpus, tmp_path_factory) -> dict[str, np.ndarray]:
    """Real corpus art of several shapes (portrait, landscape, transparent), saved losslessly for imgutils."""
    folder = tmp_path_factory.mktemp("pictures")
    out = {}
    for name in (
        "anime2sketch_001.jpg",
        "style2paints_021.png",
        "danbooregion_007.png",
        "controlnet11_photo_001.png",
    ):
        rgb = decode_image(read_bytes(os.path.join(corpus, name))).rgb
        path = str(folder / (os.path.splitext(name)[0] + ".png"))
        Image.fromarray(rgb).save(path)
        out[path] = rgb
    return out


@pytest.fixture(scope="module")
def reference(hf_home, hub, pictures) -> list[dict]:
    """imgutils' results, computed by imgutils itself from the offline cache."""
    pytest.importorskip("imgutils", reason="dghs-imgutils (dev extra) is the reference implementation")
    env = {**os.environ, "HF_HOME": hf_home, "HF_HUB_OFFLINE": "1"}
    models = json.dumps({name: PUBLISHED[name][1] for name in ONNX_SCORERS})
    res = subprocess.run(
        [sys.executable, "-m", "tests.imgutils_reference", models, *pictures],
        capture_output=True, text=True, env=env, timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_registry_lists_the_onnx_scorers_and_checks_their_options():
    assert set(ONNX_SCORERS) <= set(scorers.available())
    assert scorers.info("anime_classify").columns == ("anime_class", "p_3d", "p_comic", "p_not_painting")
    with pytest.raises(ValueError, match="threshold"):
        scorers.check_options("anime_real", {"threshold": 0.0})
    with pytest.raises(ValueError, match="model folder name"):
        scorers.check_options("monochrome", {"model": "../x"})
    with pytest.raises(TypeError, match="no option"):
        scorers.check_options("dbaesthetic", {"threshold": 0.5})  # it decides nothing


def test_each_scorer_matches_imgutils_to_1e5(hub, pictures, reference):
    images = list(pictures.values())
    built = {name: scorers.create(name, weights=hub[name]) for name in ONNX_SCORERS}
    real = built["anime_real"](images)
    kind = built["anime_classify"](images)
    mono = built["monochrome"](images)
    rating = built["dbrating"](images)
    aesthetic = built["dbaesthetic"](images)
    spread = []
    for i, ref in enumerate(reference):
        assert real["p_real"][i] == pytest.approx(ref["anime_real"]["real"], abs=1e-5)
        for col, label in (("p_3d", "3d"), ("p_comic", "comic"), ("p_not_painting", "not_painting")):
            assert kind[col][i] == pytest.approx(ref["anime_classify"][label], abs=1e-5)
        assert kind["anime_class"][i] == max(ref["anime_classify"], key=ref["anime_classify"].get)
        assert mono["p_monochrome"][i] == pytest.approx(ref["monochrome"], abs=1e-5)
        best = max(ref["dbrating"], key=ref["dbrating"].get)
        assert rating["dbrating"][i] == best[0] and rating["dbrating_p"][i] == pytest.approx(
            ref["dbrating"][best], abs=1e-5
        )
        assert aesthetic["dbaesthetic_score"][i] == pytest.approx(ref["dbaesthetic"]["score"], abs=1e-5)
        assert aesthetic["dbaesthetic_percentile"][i] == pytest.approx(
            ref["dbaesthetic"]["percentile"], abs=1e-5
        )
        assert aesthetic["dbaesthetic_tier"][i] == ref["dbaesthetic"]["label"]
        spread.append(ref["anime_real"]["real"])
    assert np.std(spread) > 0.02, "outputs this flat would not test the preprocessing"
    assert built["dbaesthetic"].model.size == (448, 448) and built["anime_real"].model.size == (384, 384)


def test_batches_equal_single_images(hub, pictures):
    images = list(pictures.values())
    scorer = scorers.create("anime_classify", weights=hub["anime_classify"], batch_size=3)
    together = scorer.model.probabilities(images)
    alone = np.concatenate([scorer.model.probabilities([img]) for img in images])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_symbolic_input_size_is_imgutils_384(tmp_path):
    write_model(str(tmp_path / "m"), "anime_real", seed=1, dynamic_side=True)
    scorer = scorers.create("anime_real", weights=str(tmp_path / "m"))
    assert scorer.model.size == (384, 384)


def test_weights_resolve_from_the_cache_and_refuse_what_they_cannot_run(hub, tmp_path, monkeypatch):
    # no weights given: the cache's <repo name>/<model>/ folder, as every checkpoint
    cache = tmp_path / "cache"
    target = cache / "anime_real_cls" / PUBLISHED["anime_real"][1]
    target.parent.mkdir(parents=True)
    os.symlink(hub["anime_real"], target)
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(cache))
    scorer = scorers.create("anime_real")
    assert scorer.files["model.onnx"] and scorer.details["provider"] == "CPUExecutionProvider"
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="huggingface.co/deepghs/monochrome_detect/resolve/main/"):
        scorers.create("monochrome")
    # a model with its own preprocess.json, a damaged file, labels that do not fit: one clear error each
    odd = tmp_path / "odd"
    write_model(str(odd), "monochrome")
    (odd / "preprocess.json").write_text('{"stages": []}')
    with pytest.raises(WeightsError, match="preprocess.json"):
        scorers.create("monochrome", weights=str(odd))
    (odd / "preprocess.json").unlink()
    (odd / "meta.json").write_text('{"labels": ["colour", "normal"]}')
    with pytest.raises(WeightsError, match="lack \\['monochrome'\\]"):
        scorers.create("monochrome", weights=str(odd))
    (odd / "model.onnx").write_bytes(b"not an onnx file")
    (odd / "meta.json").write_text('{"labels": ["monochrome", "normal"]}')
    with pytest.raises(WeightsError, match="onnxruntime cannot open it"):
        scorers.create("monochrome", weights=str(odd))


def test_verdicts_and_the_deferred_illustration_cut(hub):
    built = {
        name: scorers.create(name, weights=hub[name], threshold=0.6)
        for name in ("anime_real", "anime_classify", "monochrome")
    }
    row = {
        "status": "kept",
        "p_real": 0.2,
        "p_3d": 0.1,
        "p_comic": 0.7,
        "p_not_painting": 0.0,
        "p_monochrome": 0.9,
    }
    assert judge(row, built) == "anime_classify"
    assert (row["stage"], row["reason"]) == ("scorer", "comic") and row[
        "detail"
    ] == "anime_classify: P(comic) 0.700 >= 0.6"
    row = {"status": "kept", "p_real": 0.61, "p_monochrome": 0.1}
    assert judge(row, built) == "anime_real" and row["reason"] == "not_illustration"
    row = {"status": "kept", "p_real": 0.59, "p_3d": None, "p_monochrome": 0.61}
    assert judge(row, built) == "monochrome" and row["reason"] == "monochrome"
    assert judge({"status": "kept", "p_real": 0.1, "p_monochrome": 0.1}, built) is None
    cut = MetricThresholds()
    assert defer_illustration(cut, ["dbaesthetic", "monochrome"]) == cut  # no photo classifier: no deferral
    assert defer_illustration(cut, ["anime_real"]).min_illustration == pytest.approx(
        cut.min_illustration - cut.illustration_defer
    )


def test_build_with_every_onnx_scorer_records_them_and_fills_their_columns(
    small_corpus, hub, tmp_path, ray_cluster
):
    """A real build on CPU through the CLI and Ray: every deepghs scorer in the actor stage."""
    # anime_real's threshold halves these images (random weights); the other verdicts stay off
    images = [work_copy(decode_image(read_bytes(os.path.join(small_corpus, n))).rgb)
              for n in sorted(os.listdir(small_corpus))]  # fmt: skip
    p_real = sorted(scorers.create("anime_real", weights=hub["anime_real"])(images)["p_real"])
    cut = (p_real[len(p_real) // 2 - 1] + p_real[len(p_real) // 2]) / 2
    options = {
        "anime_real": f"threshold = {cut}\n",
        "anime_classify": "threshold = 1.0\n",
        "monochrome": "threshold = 1.0\n",
    }
    tables = "".join(
        f'[scorers.{name}]\nweights = "{hub[name]}"\nbatch_size = 2\n{options.get(name, "")}'
        for name in ONNX_SCORERS
    )
    cfg = write_config(str(tmp_path / "b.toml"), tables + "[shards]\nsamples_per_shard = 4\n")
    out = str(tmp_path / "out")
    res = cli("build", small_corpus, "--out", out, "--config", cfg, address=ray_cluster, timeout=600)
    assert res.returncode == 0, res.stderr
    rec = json.load(open(os.path.join(out, "build.json")))["scorers"]
    assert set(rec) == set(ONNX_SCORERS)
    for name in ONNX_SCORERS:
        assert rec[name]["weights_sha256"] == sha256_file(os.path.join(hub[name], "model.onnx"))
        assert rec[name]["files_sha256"]["meta.json"] == sha256_file(os.path.join(hub[name], "meta.json"))
        assert rec[name]["model"] == PUBLISHED[name][1] and rec[name]["provider"] == "CPUExecutionProvider"
    assert rec["dbaesthetic"]["files_sha256"]["samples.npz"] == sha256_file(
        os.path.join(hub["dbaesthetic"], "samples.npz")
    )
    scan = pa.concat_tables(
        [pq.read_table(p) for p in sorted(glob.glob(os.path.join(out, "scan", "*.parquet")))]
    )
    rows = scan.to_pylist()
    scored = [r for r in rows if r["p_real"] is not None]
    assert scored, "no image reached the scorers"
    direct = scorers.create("dbaesthetic", weights=hub["dbaesthetic"])
    for r in scored:
        assert r["anime_class"] in PUBLISHED["anime_classify"][2] and r["dbrating"] in ("g", "s", "q", "e")
        assert 0 <= r["dbaesthetic_percentile"] <= 1 and r["dbaesthetic_tier"]
        if r["stage"] == "scorer":
            assert r["reason"] in ("not_illustration", "comic", "monochrome") and ": P(" in r["detail"]
    rgb = decode_image(read_bytes(scored[0]["location"])).rgb
    assert direct([work_copy(rgb)])["dbaesthetic_percentile"][0] == pytest.approx(
        scored[0]["dbaesthetic_percentile"], abs=1e-6
    )
    fired = [r for r in scored if r["stage"] == "scorer"]
    assert fired and all(r["reason"] == "not_illustration" and r["p_real"] >= cut for r in fired)
    assert any(r["status"] == "kept" for r in scored)
    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    assert {r["key"] for r in rejects if r["stage"] == "scorer"} == {r["key"] for r in fired}
    assert cli("verify", out).returncode == 0
