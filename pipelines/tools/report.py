"""The audit as one self-contained HTML page: plots and contact sheets inlined as data URIs.

Every text that comes from the build (tags, keys, source names) goes through ``html.escape``;
plot labels are drawn with mathtext off, so a tag like ``$_$`` is shown as written.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

THUMB_HEIGHT = 160

# Marks images that failed to decode, and tells a headless browser how many did load.
_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
  if (ok < imgs.length) {
    var p = document.createElement("p");
    p.className = "bad";
    p.textContent = (imgs.length - ok) + " image(s) of this report did not load";
    document.body.insertBefore(p, document.body.firstChild);
  }
});
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.plots img { max-width: 48%; margin: 4px; border: 1px solid #eee; }
.sheet { display: flex; flex-wrap: wrap; gap: 12px; }
.pair { border: 1px solid #ddd; padding: 6px; max-width: 100%; }
.pair img { height: 160px; margin-right: 4px; vertical-align: top; }
.pair .cap { font-size: 12px; color: #444; max-width: 520px; overflow-wrap: anywhere; }
.bad { color: #b00; font-weight: bold; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png_of_figure(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return _data_uri(buf.getvalue(), "image/png")


def _figure(width: float = 6.0, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def plot_weight_histogram(report: dict[str, Any]) -> str:
    hist = report["weight"]["log10_histogram"]
    fig, ax = _figure()
    edges = np.asarray(hist["edges"])
    if len(edges) > 1:
        ax.bar(10 ** edges[:-1], hist["counts"], width=np.diff(10**edges), align="edge", color="#4477aa")
        ax.set_xscale("log")
    ax.set_xlabel("weight (mean 1)")
    ax.set_ylabel("samples")
    ax.set_title("Weight histogram")
    return _png_of_figure(fig)


def plot_shares(report: dict[str, Any], dims: Sequence[str] = ("source", "tier")) -> str:
    fig, ax = _figure(6.0, 3.6)
    names, intended, realised = [], [], []
    for dim in dims:
        for name, share in report["intended"][dim].items():
            names.append(f"{dim}: {name}")
            intended.append(share)
            realised.append(report["realised"][dim].get(name, 0.0))
    y = np.arange(len(names))
    ax.barh(y - 0.2, intended, height=0.4, label="intended", color="#4477aa")
    ax.barh(y + 0.2, realised, height=0.4, label=f"realised ({report['draws']} draws)", color="#ee6677")
    ax.set_yticks(y, names, parse_math=False)
    ax.invert_yaxis()
    ax.set_xlabel("share of draws")
    ax.set_title("Share of draws per source and tier")
    ax.legend(loc="lower right", fontsize=8)
    return _png_of_figure(fig)


def plot_buckets(report: dict[str, Any]) -> str:
    fig, ax = _figure()
    names = list(report["intended"]["bucket"])
    x = np.arange(len(names))
    counts = [report["counts"]["bucket"].get(n, 0) for n in names]
    total = max(sum(counts), 1)
    ax.bar(x - 0.27, [c / total for c in counts], width=0.27, label="samples", color="#bbbbbb")
    ax.bar(
        x,
        [report["intended"]["bucket"][n] for n in names],
        width=0.27,
        label="intended draws",
        color="#4477aa",
    )
    ax.bar(
        x + 0.27,
        [report["realised"]["bucket"].get(n, 0) for n in names],
        width=0.27,
        label="realised",
        color="#ee6677",
    )
    ax.set_xticks(x, names, rotation=60, fontsize=8, parse_math=False)
    ax.set_ylabel("share")
    ax.set_title("Buckets (width x height)")
    ax.legend(fontsize=8)
    return _png_of_figure(fig)


def plot_tag_mass(report: dict[str, Any]) -> str:
    rows = report["tags"]["by_weight"][:15]
    fig, ax = _figure(6.0, 0.3 * max(len(rows), 3) + 1.2)
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r[2] for r in rows], height=0.4, label="share of weight", color="#4477aa")
    ax.barh(
        y + 0.2,
        [r[1] / max(report["samples"], 1) for r in rows],
        height=0.4,
        label="share of samples",
        color="#bbbbbb",
    )
    ax.set_yticks(y, [str(r[0])[:40] for r in rows], fontsize=8, parse_math=False)
    ax.invert_yaxis()
    ax.set_title("Tag mass (top tags by weight)")
    ax.legend(fontsize=8, loc="lower right")
    return _png_of_figure(fig)


def _thumb(image: np.ndarray, fmt: str) -> str:
    h, w = image.shape[:2]
    size = (max(1, round(w * THUMB_HEIGHT / h)), THUMB_HEIGHT)
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", small)
    if not ok:
        raise RuntimeError("could not encode a thumbnail")
    return _data_uri(buf.tobytes(), f"image/{fmt}")


def contact_sheet(samples: Sequence[dict[str, Any]]) -> str:
    """Each illustration beside its line drawings, with its key, source, tier, weight and tags."""
    parts = ['<div class="sheet">']
    for s in samples:
        meta = s["meta"]
        imgs = [
            f'<img src="{_thumb(s["image"], "jpeg")}" alt="illustration {_e(s["key"])}" title="illustration">'
        ]
        for name, lines in s["lines"].items():
            imgs.append(f'<img src="{_thumb(lines, "png")}" alt="{_e(name)} lines" title="{_e(name)}">')
        tags = meta.get("tags") or {}
        shown = [t for cat in ("character", "artist", "copyright", "general") for t in tags.get(cat, [])][:12]
        weight = f"{meta.get('weight') or 0:.3g}"
        caption = (
            f"<b>{_e(s['key'])}</b> · {_e(meta.get('source'))} · tier {_e(meta.get('tier'))} · "
            f"weight {_e(weight)} · lines: {_e(', '.join(s['lines']))}<br>"
            f"{_e(' '.join(shown))}"
        )
        parts.append(f'<div class="pair">{"".join(imgs)}<div class="cap">{caption}</div></div>')
    parts.append("</div>")
    return "\n".join(parts)


def _share_table(report: dict[str, Any], dim: str) -> str:
    rows = [f"<tr><th>{_e(dim)}</th><th>samples</th><th>intended</th><th>realised</th></tr>"]
    for name, share in report["intended"][dim].items():
        rows.append(
            f"<tr><td>{_e(name)}</td><td class=n>{report['counts'][dim].get(name, 0)}</td>"
            f"<td class=n>{share:.2%}</td><td class=n>{report['realised'][dim].get(name, 0):.2%}</td></tr>"
        )
    return f"<table>{''.join(rows)}</table>"


def _tag_table(report: dict[str, Any]) -> str:
    rows = ["<tr><th>by count</th><th>samples</th><th>by weight</th><th>share of weight</th></tr>"]
    by_count, by_weight = report["tags"]["by_count"], report["tags"]["by_weight"]
    for i in range(max(len(by_count), len(by_weight))):
        a = by_count[i] if i < len(by_count) else ["", "", 0]
        b = by_weight[i] if i < len(by_weight) else ["", "", 0]
        rows.append(
            f"<tr><td>{_e(a[0])}</td><td class=n>{_e(a[1])}</td><td>{_e(b[0])}</td><td class=n>{b[2]:.2%}</td></tr>"
        )
    return f"<table>{''.join(rows)}</table>"


def render_html(report: dict[str, Any], samples: Sequence[dict[str, Any]]) -> str:
    from .audit import uncategorised_line

    plots = [plot_weight_histogram(report), plot_shares(report), plot_buckets(report), plot_tag_mass(report)]
    titles = ["weight histogram", "share of draws per source and tier", "bucket histogram", "tag mass"]
    problems = "".join(
        f"<p class=bad>bad shard {_e(path)}: {_e(why)} (left out of the draws)</p>"
        for path, why in sorted(report["shard_problems"].items())
    )
    rejects = "".join(
        f"<tr><td>{_e(reason)}</td><td class=n>{n}</td></tr>"
        for reason, n in report["rejects_by_reason"].items()
    )
    body = [
        f"<h1>linepairs audit: {_e(report['out'])}</h1>",
        problems,
        f"<p>{report['samples']} samples in {report['shards']} shards · effective sample size "
        f"{report['effective_sample_size']:.0f} · {report['draws']} draws in {report['batches']} batches of "
        f"{report['batch_size']} (seed {report['seed']}) · bucket purity {report['bucket_purity']:.0%} · "
        f"{report['samples_drawn_at_least_once']:.0%} of samples drawn at least once</p>",
        '<div class="plots">'
        + "".join(
            f'<img src="{uri}" alt="{_e(t)}" title="{_e(t)}">' for uri, t in zip(plots, titles, strict=True)
        )
        + "</div>",
        "<h2>Intended and realised share of draws</h2>",
        *(_share_table(report, d) for d in ("source", "tier", "bucket")),
        "<h2>Top tags</h2>",
        f"<p>{_e(uncategorised_line(report).split(None, 1)[1])}</p>",
        _tag_table(report),
        "<h2>Rejects by reason</h2>",
        f"<table>{rejects}</table>" if rejects else "<p>none</p>",
        f"<h2>Contact sheet: {len(samples)} sampled pairs (in draw order)</h2>",
        contact_sheet(samples),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>linepairs audit: {_e(report['out'])}</title><style>{_STYLE}</style>"
        f"<script>{_CHECK_SCRIPT}</script></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def render_compare_html(report: dict[str, Any]) -> str:
    """``audit --compare A B`` as a page: intended shares side by side (every label escaped)."""
    a, b = report["a"], report["b"]
    sections = []
    for dim in ("source", "tier", "bucket", "tags"):
        rows = [f"<tr><th>{_e(dim)}</th><th>{_e(a)}</th><th>{_e(b)}</th><th>change</th></tr>"]
        for name, x, y in report["shares"][dim]:
            rows.append(
                f"<tr><td>{_e(name)}</td><td class=n>{x:.2%}</td><td class=n>{y:.2%}</td>"
                f"<td class=n>{y - x:+.2%}</td></tr>"
            )
        title = "top tags (share of weight)" if dim == "tags" else f"share of draws per {dim}"
        sections.append(f"<h2>{_e(title)}</h2><table>{''.join(rows)}</table>")
    ess = " · ".join(
        f"{_e(n)}: effective sample size {report['versions'][n]['effective_sample_size']:.0f}" for n in (a, b)
    )
    title = f"linepairs weights: {report['out']}: {a} vs {b}"
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        f"<h1>{_e(title)}</h1><p>{report['samples']} samples · {ess}</p>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
