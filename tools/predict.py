"""Predict the mask of a photo, or of every photo in a folder, with a trained checkpoint.

    python tools/predict.py examples/test/images/pets.Bengal/Bengal_19.jpg --overlay
    python tools/predict.py my_photos/ --out my_masks/

A photo's binary mask goes beside it as PHOTO.mask.png (or to --out), white where the model sees
the object; --overlay also draws the prediction over the photo (PHOTO.overlay.png). A folder:
every photo in it and its subfolders, masks beside them or mirrored under --out. An existing
output is never replaced without --overwrite: the new one goes beside it (PHOTO.mask-1.png, ...).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
try:
    from segmentation import (DEFAULT_CHECKPOINT, IMAGE_SUFFIXES, DataError, format_time,
                              free_path, predict, read_image)
    from tools.checkpoint import load_model
    from tools.report import paint
except ImportError as error:  # e.g. a torchvision built for another torch, said in one line
    if __name__ == "__main__":
        sys.exit(f"error: {error}")
    raise

# What this command writes beside a photo (X.mask.png, X.overlay.png, X.mask-1.png, ...): never
# a photo to predict or grade (run_tests.py and tools/prepare_upload.py skip them too).
OWN_OUTPUT = re.compile(r"\.(mask|overlay)(-\d+)?$")


def write_mask(photo: Path, mask: np.ndarray, out: Path, draw_overlay: bool = False,
               overwrite: bool = False) -> List[Path]:
    """Save `mask` as a 0/255 PNG at `out` (and the overlay beside it); returns the paths written.

    An existing file is kept unless `overwrite`: the new one goes beside it (name-1.png, ...).
    """
    outputs = [(out, mask.astype(np.uint8) * 255)]
    if draw_overlay:
        outputs.append((out.with_name(photo.stem + ".overlay.png"),
                        paint(read_image(photo), mask)))
    written = []
    for path, array in outputs:
        path = path if overwrite else free_path(path)  # never replace silently
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        written.append(path)
    return written


def predict_folder(model, folder: Path, out_dir: Optional[Path] = None,
                   draw_overlay: bool = False, overwrite: bool = False) -> int:
    """Predict every photo under `folder`: a mask beside each (or in `out_dir`, mirroring the
    subfolders), progress as it goes and a summary. An unreadable file is named and skipped;
    returns the exit status (1 if any was)."""
    photos = [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
              and p.is_file() and not OWN_OUTPUT.search(p.stem)]
    if not photos:
        raise DataError(f"{folder}: no photos in it or its subfolders "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    print(f"predicting {len(photos)} photos under {folder} ...", flush=True)
    start, last, failed, shares = time.time(), time.time(), [], []
    for done, photo in enumerate(photos, 1):
        try:
            mask = predict(model, photo) > 0.5
        except DataError as error:
            failed.append(str(error))
            continue
        relative = photo.relative_to(folder).with_suffix(".png")
        out = out_dir / relative if out_dir else photo.with_suffix(".mask.png")
        write_mask(photo, mask, out, draw_overlay, overwrite)
        shares.append(float(mask.mean()))
        if time.time() - last >= 5 and done < len(photos):
            last = time.time()
            left = (last - start) / done * (len(photos) - done)
            print(f"{done}/{len(photos)} photos, ~{format_time(left)} left", flush=True)
    where = f"to {out_dir}" if out_dir else "beside the photos"
    print(f"wrote {len(shares)} masks {where} in {format_time(time.time() - start)}"
          + (f"; the object covers {np.mean(shares):.0%} of a photo on average" if shares else ""))
    if failed:
        print(f"{len(failed)} file(s) could not be read and were skipped:\n  "
              + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", help="a photo (any size; grey or colour), or a folder: every "
                                      "photo in it and its subfolders")
    parser.add_argument("--model", default=DEFAULT_CHECKPOINT,
                        help=f"the checkpoint to load (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--out", help="a photo: write its binary mask here as PNG (default: "
                                      "IMAGE.mask.png); a folder: write the masks into this "
                                      "folder, as <subfolder>/<name>.png (default: beside each "
                                      "photo)")
    parser.add_argument("--overlay", action="store_true",
                        help="also draw the mask over the photo (IMAGE.overlay.png, beside the "
                             "mask)")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        if Path(args.image).is_dir():
            return predict_folder(model, Path(args.image), Path(args.out) if args.out else None,
                                  args.overlay, args.overwrite)
        mask = predict(model, args.image) > 0.5
        out = Path(args.out or Path(args.image).with_suffix(".mask.png"))
        for path in write_mask(Path(args.image), mask, out, args.overlay, args.overwrite):
            print(f"{path}: {mask.shape[1]}x{mask.shape[0]}, {mask.mean():.1%} object")
    except (DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
