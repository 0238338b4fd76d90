"""Datasets, subsets, augmentation and batching, against plain loops and hand-written files."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ckatlas.data import (
    Augmentation,
    ImageData,
    UnsafePickleError,
    fixed_split,
    iterate_batches,
    load_dataset,
    random_crop_flip,
    read_cifar,
    read_digits,
    read_folder,
    read_npz,
    restricted_loads,
    standard_layout,
    subset_fraction,
)
from ckatlas.errors import UserInputError

# -- writing the real CIFAR formats ----------------------------------------------------------


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes pickles as Python 2's cPickle did (protocol 2, byte strings as STRING opcodes).

    The CIFAR python archives were written this way in 2009: strings (dict keys,
    file names, NumPy's raw array bytes and dtype codes) are 8-bit strings, and
    arrays are rebuilt by numpy.core.multiarray._reconstruct.
    """

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes | str) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _cifar_arrays(num_classes: int, n_train: int, n_test: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, size=(n_train, 3, 32, 32), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    y_train = np.arange(n_train) % num_classes
    y_test = (np.arange(n_test) * 7) % num_classes
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, fmt: str, archive: bool, dumps=py2_pickle) -> tuple[Path, tuple]:
    """A tiny CIFAR-10 (15 train, 4 test images) in the python or binary format."""
    x_tr, y_tr, x_te, y_te = arrays = _cifar_arrays(10, 15, 4)
    files: dict[str, bytes] = {}
    chunks = np.array_split(np.arange(15), 5)
    if fmt == "python":
        folder = "cifar-10-batches-py"
        for i, idx in enumerate(chunks, 1):
            files[f"data_batch_{i}"] = dumps({
                b"batch_label": b"training batch %d of 5" % i,
                b"labels": [int(v) for v in y_tr[idx]],
                b"data": x_tr[idx].reshape(len(idx), -1),
                b"filenames": [b"img_%d.png" % j for j in idx],
            })
        files["test_batch"] = dumps({b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in y_te],
                                     b"data": x_te.reshape(4, -1), b"filenames": [b"t.png"] * 4})
        files["batches.meta"] = dumps({b"num_cases_per_batch": 3, b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                       b"num_vis": 3072})
        archive_name = "cifar-10-python.tar.gz"
    else:
        folder = "cifar-10-batches-bin"

        def records(x: np.ndarray, y: np.ndarray) -> bytes:
            return np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(x), -1)], axis=1).tobytes()

        for i, idx in enumerate(chunks, 1):
            files[f"data_batch_{i}.bin"] = records(x_tr[idx], y_tr[idx])
        files["test_batch.bin"] = records(x_te, y_te)
        files["batches.meta.txt"] = ("\n".join(CIFAR10_NAMES) + "\n\n").encode()
        archive_name = "cifar-10-binary.tar.gz"
    return _write_files(root, folder, archive_name, files, archive), arrays


def write_cifar100(root: Path, fmt: str, archive: bool) -> tuple[Path, tuple]:
    x_tr, y_tr, x_te, y_te = arrays = _cifar_arrays(100, 12, 5, seed=1)
    coarse_tr, coarse_te = y_tr // 5, y_te // 5
    fine_names = [f"fine{i}" for i in range(100)]
    files: dict[str, bytes] = {}
    if fmt == "python":
        folder, archive_name = "cifar-100-python", "cifar-100-python.tar.gz"
        for name, x, y, c in (("train", x_tr, y_tr, coarse_tr), ("test", x_te, y_te, coarse_te)):
            files[name] = py2_pickle({b"filenames": [b"f"] * len(x), b"batch_label": name.encode(),
                                      b"fine_labels": [int(v) for v in y], b"coarse_labels": [int(v) for v in c],
                                      b"data": x.reshape(len(x), -1)})
        files["meta"] = py2_pickle({b"fine_label_names": [n.encode() for n in fine_names],
                                    b"coarse_label_names": [b"c%d" % i for i in range(20)]})
    else:
        folder, archive_name = "cifar-100-binary", "cifar-100-binary.tar.gz"
        for name, x, y, c in (("train.bin", x_tr, y_tr, coarse_tr), ("test.bin", x_te, y_te, coarse_te)):
            labels = np.stack([c, y], axis=1).astype(np.uint8)
            files[name] = np.concatenate([labels, x.reshape(len(x), -1)], axis=1).tobytes()
        files["fine_label_names.txt"] = "\n".join(fine_names).encode()
        files["coarse_label_names.txt"] = "\n".join(f"c{i}" for i in range(20)).encode()
    return _write_files(root, folder, archive_name, files, archive), arrays


def _write_files(root: Path, folder: str, archive_name: str, files: dict[str, bytes], archive: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        path = root / archive_name
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    (root / folder).mkdir()
    for name, data in files.items():
        (root / folder / name).write_bytes(data)
    return root / folder


# -- CIFAR -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("archive", [True, False])
def test_cifar10_reads_every_format_exactly(tmp_path: Path, fmt: str, archive: bool) -> None:
    path, (x_tr, y_tr, x_te, y_te) = write_cifar10(tmp_path, fmt, archive)
    raw = read_cifar(path, 10)
    np.testing.assert_array_equal(raw.x_train, x_tr)
    np.testing.assert_array_equal(raw.y_train, y_tr)
    np.testing.assert_array_equal(raw.x_test, x_te)
    np.testing.assert_array_equal(raw.y_test, y_te)
    assert list(raw.class_names) == CIFAR10_NAMES
    # the folder holding the archive or the extracted folder works as well
    np.testing.assert_array_equal(read_cifar(tmp_path, 10).x_train, x_tr)


@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("archive", [True, False])
def test_cifar100_reads_fine_labels(tmp_path: Path, fmt: str, archive: bool) -> None:
    path, (x_tr, y_tr, x_te, y_te) = write_cifar100(tmp_path, fmt, archive)
    raw = read_cifar(path, 100)
    np.testing.assert_array_equal(raw.x_train, x_tr)
    np.testing.assert_array_equal(raw.y_train, y_tr)
    np.testing.assert_array_equal(raw.x_test, x_te)
    np.testing.assert_array_equal(raw.y_test, y_te)
    assert raw.class_names[:2] == ("fine0", "fine1") and len(raw.class_names) == 100


def test_cifar_pixel_layout_is_rgb_planes(tmp_path: Path) -> None:
    # A record's pixel bytes are 1,024 red, then green, then blue values, each 32x32 row-major.
    _, (x_tr, *_) = write_cifar10(tmp_path, "binary", archive=False)
    record = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()[: 1 + 3072]
    image = read_cifar(tmp_path, 10).x_train[0]
    assert image[1, 0, 5] == record[1 + 1024 + 5]  # green, row 0, column 5
    assert image[2, 3, 0] == record[1 + 2048 + 3 * 32]  # blue, row 3, column 0


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_batches_rewritten_by_python3_load(tmp_path: Path, protocol: int) -> None:
    # Users re-pickle batches with modern Python/NumPy: protocol 5 rebuilds arrays from buffers.
    dumps = lambda obj: pickle.dumps(obj, protocol=protocol)  # noqa: E731
    if protocol == 2:  # Python 3 writes bytes at protocol 2 via _codecs.encode, which is refused
        path, _ = write_cifar10(tmp_path, "python", archive=False, dumps=dumps)
        with pytest.raises(UnsafePickleError, match="_codecs.encode"):
            read_cifar(path, 10)
        return
    path, (x_tr, y_tr, *_) = write_cifar10(tmp_path, "python", archive=False, dumps=dumps)
    raw = read_cifar(path, 10)
    np.testing.assert_array_equal(raw.x_train, x_tr)
    np.testing.assert_array_equal(raw.y_train, y_tr)


def test_restricted_unpickler_refuses_other_globals_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}".encode()
    # GLOBAL os.system, then call it with one string argument: what a hostile batch would hold.
    hostile = b"\x80\x02cos\nsystem\nq\x00U" + bytes([len(command)]) + command + b"\x85R."
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        restricted_loads(hostile, source="data_batch_1")
    assert not marker.exists()
    # the same payload inside a CIFAR folder: the loader names the file and refuses it
    path, _ = write_cifar10(tmp_path, "python", archive=False)
    (path / "data_batch_3").write_bytes(hostile)
    with pytest.raises(UnsafePickleError, match=r"data_batch_3.*os\.system"):
        read_cifar(path, 10)
    assert not marker.exists()
    # a harmless-looking but foreign class is refused as well
    with pytest.raises(UnsafePickleError, match="collections.OrderedDict"):
        restricted_loads(pickle.dumps({"a": __import__("collections").OrderedDict()}, protocol=2))


def test_restricted_unpickler_loads_plain_data() -> None:
    obj = {b"k": [1, 2.5, b"x", "y", (None, True)], b"a": np.arange(5, dtype=np.int16)}
    back = restricted_loads(py2_pickle(obj))
    assert back[b"k"][:3] == [1, 2.5, b"x"]
    np.testing.assert_array_equal(back[b"a"], obj[b"a"])


def test_cifar_missing_or_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"does not exist.*cifar-10-python\.tar\.gz"):
        read_cifar(tmp_path / "nowhere", 10)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match=r"no CIFAR-10 data in .*data_batch_1\.\.data_batch_5"):
        read_cifar(empty, 10)
    path, _ = write_cifar10(tmp_path / "bin", "binary", archive=False)
    (path / "data_batch_2.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(UserInputError, match=r"data_batch_2\.bin.*3073-byte records"):
        read_cifar(path, 10)
    path, _ = write_cifar10(tmp_path / "py", "python", archive=False)
    (path / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(UserInputError, match=r"test_batch.*\(N, 3072\)"):
        read_cifar(path, 10)
    (path / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(UserInputError, match=r"test_batch.*0\.\.9, found 10"):
        read_cifar(path, 10)
    (path / "test_batch").write_bytes(b"\x80\x02}q")  # truncated
    with pytest.raises(UserInputError, match="test_batch: not a readable pickle"):
        read_cifar(path, 10)
    not_tar = tmp_path / "cifar.tar.gz"
    not_tar.write_bytes(b"not an archive")
    with pytest.raises(UserInputError, match="not a tar archive"):
        read_cifar(not_tar, 10)


def test_load_cifar10_normalises_and_augments(tmp_path: Path) -> None:
    path, (x_tr, _, x_te, _) = write_cifar10(tmp_path, "binary", archive=True)
    data = load_dataset("cifar10", path)
    assert data.x_train.shape == (15, 3, 32, 32) and data.augmentation == Augmentation(pad=4, flip=True)
    pixels = x_tr.astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3)), rtol=1e-6)
    expected = (x_te / 255 - np.array(data.mean)[:, None, None]) / np.array(data.std)[:, None, None]
    np.testing.assert_allclose(data.x_test.numpy(), expected, rtol=1e-5, atol=1e-5)


# -- digits, npz, folders ------------------------------------------------------------------------


def test_digits_split_is_the_documented_rule() -> None:
    from sklearn.datasets import load_digits

    raw = read_digits()
    assert raw.x_train.shape == (1352, 1, 8, 8) and raw.x_test.shape == (445, 1, 8, 8)
    bunch = load_digits()
    test_idx = []
    for cls in range(10):  # every 4th image of each class, in file order
        members = [i for i, t in enumerate(bunch.target) if t == cls]
        test_idx += members[3::4]
    test_idx.sort()
    np.testing.assert_array_equal(raw.x_test[:, 0], bunch.images[test_idx])
    np.testing.assert_array_equal(raw.y_test, bunch.target[test_idx])
    data = load_dataset("digits")
    assert data.image_size == (16, 16) and not data.augmentation.active
    assert data.class_names == tuple("0123456789")
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std()) - 1) < 1e-3


def test_images_come_in_row_major_layout() -> None:
    # (N, 1, H, W) with channels-last strides sends oneDNN down a path that corrupts the heap.
    for data in (load_dataset("digits"), load_dataset("digits", resize=8, fraction=0.5)):
        n, c, h, w = data.x_train.shape
        assert data.x_train.stride() == (c * h * w, h * w, w, 1)
        assert data.x_test.stride() == (c * h * w, h * w, w, 1)
    odd = torch.randn(4, 8, 8, 1).permute(0, 3, 1, 2)  # channels-last strides, still "contiguous"
    assert odd.is_contiguous() and odd.stride() == (64, 1, 8, 1)
    fixed = standard_layout(odd)
    assert fixed.stride() == (64, 64, 8, 1) and torch.equal(fixed, odd)
    plain = torch.randn(4, 3, 8, 8)
    assert standard_layout(plain) is plain


def test_digits_at_native_size_is_scaled_pixels() -> None:
    data = load_dataset("digits", resize=8)
    raw = read_digits()
    restored = data.x_test * data.std[0] + data.mean[0]
    np.testing.assert_allclose(restored.numpy(), raw.x_test / 16.0, atol=1e-6)


def test_fixed_split_matches_a_loop() -> None:
    y = np.array([0, 1, 0, 0, 1, 0, 2, 1, 0, 1, 1, 0, 0])
    train, test = fixed_split(y, test_every=3)
    expected_test = []
    counts: dict[int, int] = {}
    for i, label in enumerate(y):
        counts[label] = counts.get(label, 0) + 1
        if counts[label] % 3 == 0:
            expected_test.append(i)
    assert test.tolist() == expected_test
    assert sorted(train.tolist() + test.tolist()) == list(range(len(y)))


def test_npz_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 12, 12, 3), dtype=np.uint8)  # NHWC
    y = np.arange(20) % 4
    np.savez(tmp_path / "split.npz", x_train=x[:16], y_train=y[:16], x_test=x[16:], y_test=y[16:],
             class_names=np.array(["a", "b", "c", "d"]))
    raw = read_npz(tmp_path / "split.npz")
    np.testing.assert_array_equal(raw.x_train, x[:16].transpose(0, 3, 1, 2))
    assert raw.class_names == ("a", "b", "c", "d")
    np.savez(tmp_path / "unsplit.npz", x=x[..., 0], y=y)  # (N, H, W): one channel, split by rule
    data = load_dataset("npz", tmp_path / "unsplit.npz")
    assert data.x_train.shape == (16, 1, 12, 12) and data.x_test.shape == (4, 1, 12, 12)
    np.savez(tmp_path / "objects.npz", x=np.zeros((4, 2, 2)), y=np.array([None] * 4, dtype=object))
    with pytest.raises(UserInputError, match="without pickle"):
        read_npz(tmp_path / "objects.npz")
    np.savez(tmp_path / "wrong.npz", images=x)
    with pytest.raises(UserInputError, match=r"found arrays \['images'\]; expected arrays x_train"):
        read_npz(tmp_path / "wrong.npz")
    with pytest.raises(UserInputError, match="does not exist"):
        read_npz(tmp_path / "missing.npz")


def _write_image_tree(root: Path, sizes: dict[str, dict[str, list[tuple[int, int]]]]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in sizes.items():
        for name, dims in classes.items():
            (root / split / name).mkdir(parents=True)
            for i, (w, h) in enumerate(dims):
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_folder_reads_classes_and_centre_crops(tmp_path: Path) -> None:
    from PIL import Image

    _write_image_tree(tmp_path, {
        "train": {"cat": [(20, 16), (16, 16)], "dog": [(16, 30)]},
        "val": {"cat": [(16, 16)], "dog": [(16, 16)]},
    })
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("skipped")
    raw = read_folder(tmp_path, size=16, crop_fraction=1.0)
    assert raw.class_names == ("cat", "dog")
    assert raw.x_train.shape == (3, 3, 16, 16) and raw.y_train.tolist() == [0, 0, 1]
    # A 16x16 image at size 16 and no crop margin comes back unchanged.
    original = np.asarray(Image.open(tmp_path / "val" / "cat" / "0.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(raw.x_test[0], original)
    # A 20x16 image: shorter side already 16, centre crop keeps columns 2..17.
    wide = np.asarray(Image.open(tmp_path / "train" / "cat" / "0.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(raw.x_train[0], wide[:, :, 2:18])
    data = load_dataset("folder", tmp_path, resize=8)
    assert data.x_train.shape == (3, 3, 8, 8) and data.augmentation == Augmentation(pad=1, flip=True)


def test_folder_errors_say_what_layout_is_expected(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        read_folder(tmp_path / "none")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserInputError, match=r"expected subfolders train/ and val/"):
        read_folder(tmp_path)
    _write_image_tree(tmp_path / "t2", {"train": {"a": [(8, 8)]}, "test": {"b": [(8, 8)]}})
    with pytest.raises(UserInputError, match="class 'b' has no folder under the training split"):
        read_folder(tmp_path / "t2", size=8)
    _write_image_tree(tmp_path / "t3", {"train": {"a": [(8, 8)]}, "val": {"a": [(8, 8)]}})
    (tmp_path / "t3" / "val" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserInputError, match=r"broken\.jpg: not a readable image"):
        read_folder(tmp_path / "t3", size=8)


def test_load_dataset_errors() -> None:
    with pytest.raises(UserInputError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(UserInputError, match="built in and takes no data directory"):
        load_dataset("digits", "/data")
    with pytest.raises(UserInputError, match="needs a data directory"):
        load_dataset("cifar100")
    with pytest.raises(UserInputError, match="0 < fraction <= 1"):
        load_dataset("digits", fraction=0)


def test_image_data_checks_arrays() -> None:
    x = np.zeros((4, 1, 2, 2), np.uint8)
    with pytest.raises(UserInputError, match="4 train images but 3 train labels"):
        ImageData.from_arrays("t", x, [0, 1, 0, 1][:3], x, [0, 1, 0, 1])
    with pytest.raises(UserInputError, match=r"expected images of shape \(N, C, H, W\)"):
        ImageData.from_arrays("t", x[:, 0], [0, 1, 0, 1], x, [0, 1, 0, 1])
    with pytest.raises(UserInputError, match="integer class labels"):
        ImageData.from_arrays("t", x, [0.5, 1, 0, 1], x, [0, 1, 0, 1])


# -- subsets -------------------------------------------------------------------------------------


def test_subset_fraction_is_stratified_reproducible_and_nested() -> None:
    y = torch.tensor([c for c in range(5) for _ in range(10 + 3 * c)])  # 10, 13, 16, 19, 22 per class
    for fraction in (1 / 2, 1 / 4, 1 / 16, 0.3):
        idx = subset_fraction(y, fraction, seed=3)
        counts = torch.bincount(y[idx], minlength=5).tolist()
        assert counts == [max(1, int(np.floor(fraction * n + 0.5))) for n in (10, 13, 16, 19, 22)]
        assert idx.tolist() == sorted(set(idx.tolist()))
        assert torch.equal(idx, subset_fraction(y, fraction, seed=3))
    assert not torch.equal(subset_fraction(y, 0.5, seed=0), subset_fraction(y, 0.5, seed=1))
    half, quarter = set(subset_fraction(y, 0.5, 7).tolist()), set(subset_fraction(y, 0.25, 7).tolist())
    assert quarter <= half
    assert torch.equal(subset_fraction(y, 1.0), torch.arange(len(y)))
    for bad in (0, -0.5, 1.5, "half", True):
        with pytest.raises(UserInputError, match="0 < fraction <= 1"):
            subset_fraction(y, bad)


def test_fraction_keeps_test_set_and_normalisation() -> None:
    full, quarter = load_dataset("digits"), load_dataset("digits", fraction=0.25, seed=1)
    assert torch.equal(full.x_test, quarter.x_test) and full.mean == quarter.mean
    assert torch.equal(quarter.x_train, full.x_train[quarter.train_indices])
    assert 330 <= len(quarter.y_train) <= 340


# -- augmentation and batches ----------------------------------------------------------------------


def naive_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """One image at a time: pad, cut the window at the drawn offset, maybe mirror."""
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator) if pad else None
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    out = torch.empty_like(x)
    for i in range(n):
        img = x[i]
        if pad:
            padded = torch.zeros(x.shape[1], h + 2 * pad, w + 2 * pad, dtype=x.dtype)
            padded[:, pad : pad + h, pad : pad + w] = img
            dy, dx = offsets[i].tolist()
            img = padded[:, dy : dy + h, dx : dx + w]
        if flip and flips[i]:
            img = img.flip(-1)
        out[i] = img
    return out


@pytest.mark.parametrize("pad,flip", [(4, True), (2, False), (0, True), (3, True)])
def test_random_crop_flip_matches_a_loop(pad: int, flip: bool) -> None:
    x = torch.randn(9, 3, 8, 10)
    fast = random_crop_flip(x, pad, flip, torch.Generator().manual_seed(5))
    slow = naive_crop_flip(x, pad, flip, torch.Generator().manual_seed(5))
    assert torch.equal(fast, slow)


def test_random_crop_flip_moves_content_and_mixes() -> None:
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).repeat(200, 1, 1, 1)
    out = random_crop_flip(x, 2, True, torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 20  # many different shifts and flips
    same = random_crop_flip(x, 0, False, torch.Generator())
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()


def test_iterate_batches_order_and_coverage() -> None:
    x = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
    y = torch.arange(10)
    plain = list(iterate_batches(x, y, 4))
    assert [b[1].tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(list(iterate_batches(x, y, 4, drop_last=True))) == 2
    shuffled = list(iterate_batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(1)))
    seen = torch.cat([b[1] for b in shuffled])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert all(torch.equal(xb.view(-1), yb.float()) for xb, yb in shuffled)
    again = list(iterate_batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(torch.cat([b[1] for b in again]), seen)
    with pytest.raises(UserInputError, match="explicit torch.Generator"):
        next(iterate_batches(x, y, 3, shuffle=True))
    with pytest.raises(UserInputError, match="batch_size must be a positive integer"):
        next(iterate_batches(x, y, 0))


def test_iterate_batches_augments_each_batch_from_the_generator() -> None:
    x, y = torch.randn(6, 1, 4, 4), torch.arange(6)
    aug = Augmentation(pad=1, flip=True)
    gen = torch.Generator().manual_seed(2)
    batches = list(iterate_batches(x, y, 4, augment=aug, generator=gen))
    ref_gen = torch.Generator().manual_seed(2)
    expected = [naive_crop_flip(x[:4], 1, True, ref_gen), naive_crop_flip(x[4:], 1, True, ref_gen)]
    assert all(torch.equal(b[0], e) for b, e in zip(batches, expected))
