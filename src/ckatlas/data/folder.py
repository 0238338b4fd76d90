"""Image folders in the ImageNet layout: one subfolder per class, split into train and test.

    ROOT/
      train/<class name>/<image files>
      val/<class name>/<image files>      (or test/)

Class names are the sorted subfolder names of `train/`; every class of the test
split must also be a training class. Images are read with Pillow, converted to
RGB, resized so that their shorter side is `size / crop_fraction` and centre-cropped
to `size` x `size` (with `crop_fraction=0.875` and `size=224` this is the usual
ImageNet evaluation transform: shorter side 256, centre crop 224). Hidden files
and files without an image extension are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ckatlas.data.image_data import RawImages
from ckatlas.errors import UserInputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
_LAYOUT = "ROOT/train/<class>/<images> and ROOT/val/<class>/<images> (or ROOT/test/...)"


def _class_dirs(split: Path) -> list[Path]:
    return sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def load_image(path: Path, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """One image as a `(3, size, size)` uint8 array: RGB, shorter side resized, centre-cropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            short = max(size, round(size / crop_fraction))
            scale = short / min(w, h)
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserInputError(f"{path}: not a readable image ({exc})") from None


def _read_split(split: Path, classes: dict[str, int], size: int, crop_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for class_dir in _class_dirs(split):
        if class_dir.name not in classes:
            raise UserInputError(
                f"{class_dir}: class {class_dir.name!r} has no folder under the training split "
                f"(expected {_LAYOUT})"
            )
        for file in _image_files(class_dir):
            images.append(load_image(file, size, crop_fraction))
            labels.append(classes[class_dir.name])
    if not images:
        raise UserInputError(f"{split}: no images found (expected {_LAYOUT})")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def read_folder(root: str | Path, size: int = 224, crop_fraction: float = 0.875) -> RawImages:
    """Read a class-per-folder image tree with a train and a val (or test) split.

    Args:
        root: the folder holding `train/` and `val/` (or `test/`).
        size: side of the square output images, in pixels.
        crop_fraction: share of the resized shorter side kept by the centre crop.

    Returns:
        `RawImages` with `(N, 3, size, size)` uint8 images, sorted by class then file name.
    """
    root = Path(root).expanduser()
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserInputError(f"image size must be a positive integer, got {size!r}")
    if not 0 < crop_fraction <= 1:
        raise UserInputError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}")
    if not root.is_dir():
        raise UserInputError(f"image folder {root} does not exist or is not a folder (expected {_LAYOUT})")
    train = root / "train"
    test = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if not train.is_dir() or test is None:
        raise UserInputError(f"{root}: expected subfolders train/ and val/ (or test/): {_LAYOUT}")
    class_dirs = _class_dirs(train)
    if not class_dirs:
        raise UserInputError(f"{train}: no class folders found (expected {_LAYOUT})")
    classes = {d.name: i for i, d in enumerate(class_dirs)}
    x_train, y_train = _read_split(train, classes, size, crop_fraction)
    x_test, y_test = _read_split(test, classes, size, crop_fraction)
    return RawImages(x_train, y_train, x_test, y_test, tuple(classes))


__all__ = ["IMAGE_EXTENSIONS", "load_image", "read_folder"]
