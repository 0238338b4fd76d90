"""Datasets held as tensors: digits (built in), CIFAR-10/100 archives, image folders, npz.

    data = load_dataset("digits")                       # 1,352 train / 445 test, 16x16
    data = load_dataset("cifar10", "~/data/cifar-10-batches-py", fraction=0.25, seed=0)
    gen = make_generator(0)
    for xb, yb in iterate_batches(data.x_train, data.y_train, 128, shuffle=True,
                                  generator=gen, augment=data.augmentation):
        ...

Images are float32 `(N, C, H, W)`, normalised with the per-channel mean and std
of the full training split; augmentation runs per batch on the batch's device.
"""

from ckatlas.data.augment import NO_AUGMENTATION, Augmentation, random_crop_flip
from ckatlas.data.batches import iterate_batches, num_batches
from ckatlas.data.cifar import read_cifar
from ckatlas.data.datasets import DATASETS, default_resize, list_datasets, load_dataset
from ckatlas.data.digits import read_digits
from ckatlas.data.folder import read_folder
from ckatlas.data.image_data import ImageData, RawImages, channel_stats, normalize, resize_images, standard_layout
from ckatlas.data.npz import read_npz
from ckatlas.data.restricted_pickle import RestrictedUnpickler, UnsafePickleError, restricted_loads
from ckatlas.data.subsets import check_fraction, fixed_split, subset_fraction, validation_split

__all__ = [
    "Augmentation",
    "DATASETS",
    "ImageData",
    "NO_AUGMENTATION",
    "RawImages",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "channel_stats",
    "check_fraction",
    "default_resize",
    "fixed_split",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "normalize",
    "num_batches",
    "random_crop_flip",
    "read_cifar",
    "read_digits",
    "read_folder",
    "read_npz",
    "resize_images",
    "standard_layout",
    "restricted_loads",
    "subset_fraction",
    "validation_split",
]
