"""The IDX format (MNIST, Fashion-MNIST, KMNIST): files written here in the real format, and the
Fashion-MNIST that Debian's package installs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ckatlas.data import load_dataset
from ckatlas.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_idx, read_idx_folder
from ckatlas.errors import UserInputError


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """An IDX file written field by field as LeCun's format page describes it (not with the reader's code)."""
    head = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    return head + array.astype(big_endian).tobytes()


def _write_folder(folder: Path, n_train: int = 12, n_test: int = 5, side: int = 28, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = _idx_bytes(array, 0x08)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def test_the_magic_numbers_of_the_real_format() -> None:
    images = _idx_bytes(np.zeros((3, 28, 28), np.uint8), 0x08)
    labels = _idx_bytes(np.zeros(3, np.uint8), 0x08)
    assert images[:4] == bytes.fromhex("00000803") and struct.unpack(">III", images[4:16]) == (3, 28, 28)
    assert labels[:4] == bytes.fromhex("00000801") and len(labels) == 8 + 3


@pytest.mark.parametrize("type_code, dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                              (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
def test_every_idx_type_reads_back_exactly(tmp_path: Path, type_code: int, dtype: type) -> None:
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype) if dtype != np.uint8 else (
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    for gz in (False, True):
        path = tmp_path / f"a-{type_code}.idx{'.gz' if gz else ''}"
        data = _idx_bytes(array, type_code)
        path.write_bytes(gzip.compress(data) if gz else data)
        back = read_idx(path)
        assert back.dtype == np.dtype(dtype) and back.dtype.isnative
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("gz", [True, False])
def test_a_folder_reads_as_images_and_labels_in_file_order(tmp_path: Path, gz: bool) -> None:
    arrays = _write_folder(tmp_path / "fm", gz=gz)
    raw = read_idx_folder(tmp_path / "fm", FASHION_MNIST_CLASSES)
    assert raw.x_train.shape == (12, 1, 28, 28) and raw.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(raw.x_train[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.y_test, arrays["t10k-labels-idx1-ubyte"])
    data = load_dataset("fashion-mnist", tmp_path / "fm")
    assert data.class_names == FASHION_MNIST_CLASSES and data.image_size == (28, 28)
    assert data.augmentation.flip and data.augmentation.pad == 3
    mnist = load_dataset("mnist", tmp_path / "fm", resize=16)
    assert mnist.image_size == (16, 16) and not mnist.augmentation.flip
    # pixels scaled to [0, 1] before the usual per-channel normalisation
    expected_mean = arrays["train-images-idx3-ubyte"].mean() / 255
    assert data.mean[0] == pytest.approx(expected_mean, rel=1e-5)


def test_broken_or_missing_files_are_one_clear_error(tmp_path: Path) -> None:
    _write_folder(tmp_path / "ok", gz=False)
    with pytest.raises(UserInputError, match="lacks t10k-labels-idx1-ubyte"):
        (tmp_path / "ok" / "t10k-labels-idx1-ubyte").unlink()
        read_idx_folder(tmp_path / "ok")
    cut = tmp_path / "cut-idx3-ubyte"
    cut.write_bytes(_idx_bytes(np.zeros((4, 28, 28), np.uint8), 0x08)[:500])
    with pytest.raises(UserInputError, match="truncated or corrupt"):
        read_idx(cut)
    text = tmp_path / "text-idx1-ubyte"
    text.write_text("not an idx file")
    with pytest.raises(UserInputError, match="not an IDX file"):
        read_idx(text)
    fake_gz = tmp_path / "x.gz"
    fake_gz.write_bytes(b"\x00\x00\x08\x01")
    with pytest.raises(UserInputError, match="gzipped IDX"):
        read_idx(fake_gz)
    with pytest.raises(UserInputError, match="is not a folder"):
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    with pytest.raises(UserInputError, match="needs a data directory"):
        load_dataset("mnist")


def test_the_installed_fashion_mnist_package() -> None:
    # Debian's dataset-fashion-mnist, which `make test` installs when missing.
    assert FASHION_MNIST_DIR.is_dir(), "install Debian's dataset-fashion-mnist (make system-packages)"
    data = load_dataset("fashion-mnist", fraction=1 / 16)
    assert data.x_test.shape == (10_000, 1, 28, 28) and len(data.x_train) == 3_750
    assert np.bincount(data.y_test.numpy()).tolist() == [1000] * 10
    assert np.bincount(data.y_train.numpy()).tolist() == [375] * 10
    assert data.class_names[9] == "Ankle boot"
