"""Published deepghs image classifiers (ONNX + ``meta.json``), run through onnxruntime.

The models behind ``dghs-imgutils``' ``anime_real``, ``anime_classify``, ``is_monochrome``,
``anime_dbaesthetic`` and ``anime_dbrating``. Each lives in a Hugging Face repo as one folder per
model name (``deepghs/anime_real_cls/mobilenetv3_v1.4_dist/``) holding ``model.onnx`` and
``meta.json`` (``{"labels": [...], "name": ..., ...}``: row i of the output is ``labels[i]``); the
aesthetic model adds ``samples.npz`` (its score -> percentile table).

Exported by deepghs' ``classification`` trainer: one input ``input`` ``[batch, 3, S, S]`` float32
(S = 384, 448 for the aesthetic SwinV2) and one output ``output`` ``[batch, classes]``, already
softmaxed. Preprocessing is imgutils' (``imgutils.generic.classify.ClassifyModel._raw_predict``,
0.19): the image as RGB with transparency flattened on white (our decoder does that), resized
*without keeping the aspect ratio* to the model's input width x height with PIL's bilinear filter
(384 x 384 when the ONNX input size is symbolic), scaled to [0, 1] as float32, normalised by mean
0.5 / std 0.5 (so [-1, 1]), channels first. A folder with a ``preprocess.json`` (imgutils' newer,
per-model pipelines) is refused: none of the published models here has one.

The scan hands scorers its work copy (long side <= 512), as for the timm scorers; the models see
384 or 448 pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from groundwork.checkpoints import WeightsError
from groundwork.files import sha256_file

from .timm_layout import chunks, resolve_file

DEFAULT_SIDE = 384  # imgutils' size when the ONNX input's height and width are symbolic
MODEL_FILE, META_FILE = "model.onnx", "meta.json"


def hub_url(repo: str, model: str, filename: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{model}/{filename}"


def read_meta(path: str) -> list[str]:
    """The output labels of a ``meta.json``, in output order."""
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON file ({exc})") from None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise WeightsError(f"{path}: a deepghs meta.json needs a non-empty 'labels' list of strings")
    return labels


def providers_for(device: str) -> list[str]:
    """CUDA first on a GPU device when this onnxruntime build has it (onnxruntime-gpu), else CPU."""
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxClassifier:
    """One published classifier: files resolved (folder -> cache -> URL), session opened, labels read.

    ``weights`` is the model's folder (``model.onnx``, ``meta.json`` and any ``extra`` files);
    without it the cache's ``<repo name>/<model>/`` (``$LINEPAIRS_WEIGHTS`` or ``~/.cache/linepairs``).
    """

    def __init__(self, repo: str, model: str, weights: str | None, device: str, batch_size: int,
                 extra: Sequence[str] = ()):  # fmt: skip
        import onnxruntime as ort

        folder = f"{repo.split('/')[1]}/{model}"
        self.paths = {
            f: resolve_file(weights, folder, f, hub_url(repo, model, f))
            for f in (MODEL_FILE, META_FILE, *extra)
        }
        here = os.path.dirname(self.paths[MODEL_FILE])
        if os.path.exists(os.path.join(here, "preprocess.json")):
            raise WeightsError(
                f"{here}/preprocess.json: this model has its own preprocessing; linepairs runs imgutils' "
                "default one (bilinear resize to the input size, [-1, 1]) only"
            )
        self.labels = read_meta(self.paths[META_FILE])
        what = f"{repo}/{model} ({self.paths[MODEL_FILE]})"
        options = ort.SessionOptions()
        if device == "cpu":  # one CPU per scorer actor; also fixes the float reduction order
            options.intra_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                self.paths[MODEL_FILE], options, providers=providers_for(device)
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Exception subclasses (InvalidProtobuf, NoSuchFile, Fail...): one WeightsError line
            raise WeightsError(f"{what}: onnxruntime cannot open it ({type(exc).__name__}: {exc})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != ["input"] or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
            raise WeightsError(
                f"{what}: expected one input 'input' [batch, 3, H, W], got {[(i.name, i.shape) for i in inputs]}"
            )
        if "output" not in [o.name for o in outputs]:
            raise WeightsError(f"{what}: no output named 'output' (has {[o.name for o in outputs]})")
        batch, _, h, w = inputs[0].shape
        self.size = (w, h) if isinstance(h, int) and isinstance(w, int) else (DEFAULT_SIDE, DEFAULT_SIDE)
        self.batch_size = batch if isinstance(batch, int) and batch > 0 else batch_size
        self.files = {f: sha256_file(p) for f, p in self.paths.items()}
        self.provider = self.session.get_providers()[0]
        self.details = {"repo": repo, "model": model, "input": list(self.size), "labels": list(self.labels),
                        "provider": self.provider}  # fmt: skip

    def encode(self, rgb: np.ndarray) -> np.ndarray:
        """``H x W x 3`` uint8 RGB -> ``3 x h x w`` float32, exactly as imgutils' ``_img_encode``."""
        img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").resize(
            self.size, Image.BILINEAR
        )
        x = (np.asarray(img).transpose(2, 0, 1) / 255.0).astype(np.float32)
        return ((x - 0.5) / 0.5).astype(np.float32)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``N x labels`` float32: the model's ``output`` (softmaxed by the export)."""
        out = []
        for part in chunks(images, self.batch_size):
            batch = np.stack([self.encode(img) for img in part])
            (y,) = self.session.run(["output"], {"input": batch})
            if y.ndim != 2 or y.shape[1] != len(self.labels):
                raise WeightsError(f"output has shape {y.shape}, meta.json has {len(self.labels)} labels")
            out.append(y.astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def column(self, probs: np.ndarray, label: str) -> list[float | None]:
        """One label's probabilities as a column; None throughout when the model has no such label."""
        if label not in self.labels:
            return [None] * len(probs)
        return probs[:, self.labels.index(label)].astype(np.float32).tolist()
