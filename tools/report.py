"""The grading report (`run_tests.py --report DIR`): a page to look at, opened from disk, with
the marks, the per-class table, a histogram of per-image IoU and the worst images with their
errors coloured; and the one painter of errors on a photo that the report and the lab's scripts
share, with its colour key for matplotlib figures.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from html import escape
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from tools.checkpoint import shown_path
from segmentation import read_image, read_mask


# Okabe-Ito colours, told apart with every common colour-vision deficiency.
COLOURS = {"tp": ((0, 158, 115), "object, found"),
           "fp": ((213, 94, 0), "painted as object, but background"),
           "fn": ((0, 114, 178), "object, missed")}
THUMB = 240                     # thumbnails' longer side, pixels
REPORT_MARK = ".grading-report"  # marks a folder this script wrote, so --overwrite may replace it


def paint(image: np.ndarray, pred: np.ndarray, truth: Optional[np.ndarray] = None) -> np.ndarray:
    """The photo greyed and dimmed, with the object found, background painted as object and
    object missed each in its COLOURS colour; right background stays grey. Without `truth`,
    the prediction alone, in the colour of an object found."""
    pred = np.asarray(pred, dtype=bool)
    truth = pred if truth is None else np.asarray(truth, dtype=bool)
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    out = np.repeat((0.35 * grey + 60)[..., None], 3, axis=2)
    for kind, where in (("tp", pred & truth), ("fp", pred & ~truth), ("fn", ~pred & truth)):
        out[where] = 0.35 * out[where] + 0.65 * np.array(COLOURS[kind][0], np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


def add_key(fig) -> None:
    """A legend of paint's colours along the bottom of a matplotlib figure `fig`."""
    from matplotlib.patches import Patch
    handles = [Patch(color=tuple(c / 255 for c in colour), label=words)
               for colour, words in COLOURS.values()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)


HISTOGRAM_BARS, HISTOGRAM_MEAN = "#8c8c8c", "#111111"  # neither is a colour of the error key


def _count_ticks(top: int) -> List[int]:
    """0, the top count and a few round counts between, for the histogram's y axis."""
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9)
                if top / s <= 5)
    return sorted(set(range(0, top + 1, step)) | {top})


def iou_histogram_svg(ious: Sequence[float], bins: int = 20, width: int = 560,
                      height: int = 200) -> str:
    """An inline SVG histogram of per-image IoU in `bins` bins over [0, 1], the mean marked;
    labelled axes (IoU, number of images), in greys that the error key never uses."""
    counts, _ = np.histogram(np.clip(ious, 0, 1), bins=bins, range=(0, 1))
    left, bottom, top = 52, 38, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    scale = plot_h / max(counts.max(), 1)
    bar_w = plot_w / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="histogram of per-image IoU">']
    for i, count in enumerate(counts):
        h = count * scale
        parts.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{top + plot_h - h:.1f}" '
                     f'width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{HISTOGRAM_BARS}">'
                     f'<title>IoU {i / bins:.2f}-{(i + 1) / bins:.2f}: {count} images</title>'
                     '</rect>')
    for tick in np.linspace(0, 1, 11):
        x = left + tick * plot_w
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 15}" font-size="11" '
                     f'text-anchor="middle">{tick:.1f}</text>')
    for count in _count_ticks(int(counts.max())):
        y = top + plot_h - count * scale
        parts.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#333"/>'
                     f'<text class="ytick" x="{left - 7}" y="{y + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{count}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
                 f'stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" '
                 'stroke="#333"/>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="12" '
                 f'text-anchor="middle">IoU of the image</text>'
                 f'<text x="12" y="{top + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">images</text>')
    mean_x = left + float(np.mean(ious)) * plot_w
    parts.append(f'<line x1="{mean_x:.1f}" y1="{top}" x2="{mean_x:.1f}" y2="{top + plot_h}" '
                 f'stroke="{HISTOGRAM_MEAN}" stroke-width="2" stroke-dasharray="4 3"/>'
                 f'<text x="{mean_x - 4:.1f}" y="{top + 10}" font-size="11" text-anchor="end" '
                 f'fill="{HISTOGRAM_MEAN}">mean {np.mean(ious):.3f}</text></svg>')
    return "".join(parts)


def cards_heading(shown: int, total: int) -> str:
    """The heading over the image cards, true for any number shown."""
    if shown >= total:
        return f"All {total} images, worst first"
    return f"The {shown} worst of {total} images"


def prepare_report_dir(target: Path, overwrite: bool) -> Tuple[Path, Path]:
    """(where the report will end up, an empty staging folder beside it), checked before grading.

    An existing folder is never replaced silently: without `overwrite` the report goes beside it
    under a free name (DIR-1, DIR-2, ...); with it, only a report this script wrote is replaced.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"--report {target}: a file, not a folder")
    if target.exists() and overwrite and any(target.iterdir()) \
            and not (target / REPORT_MARK).exists():
        raise ValueError(f"--report {target}: holds files that are not a report of run_tests.py; "
                         "not replaced (give a new or empty folder)")
    final, n = target, 0
    while final.exists() and not overwrite:
        n += 1
        final = target.with_name(f"{target.name}-{n}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; a report is for reading
    except OSError as error:
        raise ValueError(f"--report {target}: cannot write there "
                         f"({error.strerror or error})") from None
    return final, staging


def _save_thumbnail(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(array)
    image.thumbnail((THUMB, THUMB), Image.BILINEAR)
    image.save(path, quality=82)


STYLE = """<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }
h1 { font-size: 24px; margin-bottom: 4px; } .meta { color: #555; }
.marks { font-size: 20px; } table { border-collapse: collapse; margin: 8px 0 16px; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 12px 3px 0; text-align: left; }
.key { margin-right: 18px; white-space: nowrap; }
.key i { display: inline-block; width: 14px; height: 14px; margin-right: 6px;
          vertical-align: -2px; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; }
.card { margin: 0; width: 500px; } .card img { width: 244px; height: auto; margin-right: 4px; }
figcaption { font-size: 13px; }
.warning { border-left: 4px solid #d55e00; padding: 4px 10px; background: #fbeee6; }
</style>"""


def write_report(result: Dict, pred_dir: Path, final: Path, staging: Path, model_path: Path,
                 worst: int = 24) -> Path:
    """Write the grading report into `staging`, then move it to `final`; returns index.html's path.

    `result` is run_tests.grade_upload's, with "marks" and "model" (describe_model) added; its
    records name each image's photo and ground truth. The `worst` images are shown as
    photo + errors, each linked to its full-size files.
    """
    records = sorted(result["records"], key=lambda r: (r["iou"], r["image"]))
    (staging / "thumbs").mkdir()
    (staging / "full").mkdir()
    cards = [_card(rank, record, pred_dir, staging)
             for rank, record in enumerate(records[:worst], 1)]
    env, mean = result["environment"], result["mean_iou"]
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:12]
    legend = "".join(f'<span class="key"><i style="background:rgb{colour}"></i>'
                     f'{escape(words)}</span>' for colour, words in COLOURS.values())
    model = result.get("model") or {"lines": [], "warning": None}
    model_words = "".join(f'<p class="model">{escape(line)}</p>\n' for line in model["lines"])
    if model["warning"]:
        model_words += f'<p class="warning">{escape(model["warning"])}</p>\n'
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Grading report: mean IoU {mean:.4f}</title>
{STYLE}</head><body>
<h1>Grading report</h1>
<p class="marks"><b>{result['marks']}/10 marks</b>: mean IoU <b>{mean:.4f}</b> over
{len(records)} images</p>
{f'<p class="sure">{escape(result["how_sure"]["words"])}</p>' if "how_sure" in result else ""}
{model_words}<p class="meta">Model {escape(shown_path(model_path))} (SHA-256 {digest}...), graded
{time.strftime("%Y-%m-%d %H:%M")} with Python {escape(env["python"])}, torch {escape(env["torch"])};
data {escape(shown_path(result["images_dir"]))}.</p>
<h2>Per class, worst first</h2>
<table><tr><th>class</th><th>images</th><th>mean IoU</th><th>worst image (IoU)</th></tr>
{_class_rows(records, worst)}</table>
<h2>IoU per image</h2>
{iou_histogram_svg([r["iou"] for r in records])}
<h2>{cards_heading(len(cards), len(records))}</h2>
<p>Left: the photo. Right: the prediction against the ground truth. {legend}
Click a picture for the full-size file.</p>
<div class="grid">
{"".join(cards)}
</div></body></html>
"""
    (staging / "index.html.tmp").write_text(page, encoding="utf-8")
    os.replace(staging / "index.html.tmp", staging / "index.html")
    (staging / REPORT_MARK).write_text("written by run_tests.py --report\n")
    if final.exists():  # --overwrite of an earlier report (prepare_report_dir checked it)
        shutil.rmtree(final)
    os.replace(staging, final)
    return final / "index.html"


def _card(rank: int, record: Dict, pred_dir: Path, staging: Path) -> str:
    """One worst image's card: its pictures written into `staging`, its HTML returned."""
    key, photo_path = Path(record["image"]), Path(record["photo"])
    truth_path = Path(record["truth"])
    photo = read_image(photo_path)
    pred, truth = read_mask(pred_dir / key.with_suffix(".png")), read_mask(truth_path)
    stem = f"{rank:03d}-{key.parent.name}-{key.name}"
    drawn = paint(photo, pred, truth)
    _save_thumbnail(photo, staging / "thumbs" / f"{stem}.jpg")
    _save_thumbnail(drawn, staging / "thumbs" / f"{stem}.overlay.jpg")
    Image.fromarray(drawn).save(staging / "full" / f"{stem}.overlay.jpg", quality=88)
    shutil.copyfile(photo_path, staging / "full" / f"{stem}{photo_path.suffix.lower()}")
    shutil.copyfile(pred_dir / key.with_suffix(".png"), staging / "full" / f"{stem}.pred.png")
    shutil.copyfile(truth_path, staging / "full" / f"{stem}.gt.png")
    name = escape(record["image"])
    return (f'<figure class="card" id="worst-{rank}" data-iou="{record["iou"]:.6f}">'
            f'<a href="full/{stem}{photo_path.suffix.lower()}"><img src="thumbs/{stem}.jpg" '
            f'alt="photo {name}"></a><a href="full/{stem}.overlay.jpg"><img '
            f'src="thumbs/{stem}.overlay.jpg" alt="errors on {name}"></a>'
            f'<figcaption><b>#{rank} IoU {record["iou"]:.3f}</b> {name}<br>'
            f'<a href="full/{stem}.pred.png">prediction</a> · <a href="full/{stem}.gt.png">'
            f'ground truth</a> · {pred.mean():.0%} predicted, '
            f'{truth.mean():.0%} true object</figcaption></figure>')


def _class_rows(records: List[Dict], worst: int) -> str:
    """The per-class table's rows, worst class first, each worst image linked to its card."""
    by_class: Dict[str, List[Dict]] = {}
    for record in records:  # sorted by IoU: a class's first is its worst
        by_class.setdefault(record["class"], []).append(record)
    rank_of = {r["image"]: i for i, r in enumerate(records[:worst], 1)}
    rows = []
    for cls, members in sorted(by_class.items(),
                               key=lambda item: np.mean([r["iou"] for r in item[1]])):
        low = members[0]
        link = (f'<a href="#worst-{rank_of[low["image"]]}">{escape(low["image"])}</a>'
                if low["image"] in rank_of else escape(low["image"]))
        rows.append(f'<tr><td>{escape(cls)}</td><td>{len(members)}</td>'
                    f'<td>{np.mean([r["iou"] for r in members]):.4f}</td>'
                    f'<td>{link} ({low["iou"]:.3f})</td></tr>')
    return "".join(rows)
