"""Images as torch tensors: N×H×W×3 images → float N×3×H×W in [0, 1] (the range read from the dtype), and the
torch datasets the training loop reads (arrays with targets, tiles cut on the fly from slides)."""
from __future__ import annotations

import numpy as np

from ..pixels import check_range


# ----------------------------------------------------------------------------------------- torch datasets
def to_tensor_images(images):
    """N×H×W×3 (or H×W×3) → float32 torch tensor N×3×H×W in [0, 1].

    The value range is read from the dtype, never guessed from the values: uint8 is 0–255 (divided by 255),
    floating point must already lie in [0, 1] (anything else is refused with the fix)."""
    import torch

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected images of shape N×H×W×3 (channels last), got {arr.shape}.")
    arr = np.ascontiguousarray(check_range(arr, "images"))
    if not arr.flags.writeable:      # a read-only memory map of a cache: torch wants its own (small uint8) copy
        arr = arr.copy()
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float()
    return x.div_(255.0) if arr.dtype == np.uint8 else x


def _item_tensor(pixels, name: str):
    """One H×W×3 image (uint8 0–255 or float in [0, 1]) → float32 3×H×W tensor in [0, 1]."""
    import torch

    pixels = check_range(np.array(pixels), name)      # a copy: cached arrays are read-only memory maps
    x = torch.from_numpy(pixels).permute(2, 0, 1).float()
    return x.div_(255.0) if pixels.dtype == np.uint8 else x


class ArrayDataset:
    """A torch-style dataset over N×H×W×3 images (uint8 0–255 or float in [0, 1]) and matching targets (any array
    with N rows)."""

    def __init__(self, images, targets, indices=None, transform=None):
        self.images, self.targets = images, targets
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets; they must match one to one.")
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.transform = transform

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        import torch

        j = int(self.indices[i])
        x = _item_tensor(self.images[j], f"images[{j}]")
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.as_tensor(np.asarray(self.targets[j]))


class TileDataset:
    """Tiles cut on the fly from slide arrays (N_slides×H×W×3), so tiles never need their own copy."""

    def __init__(self, slides_rgb, slide_index, coords, labels, tile: int, transform=None):
        self.rgb, self.tile, self.transform = slides_rgb, int(tile), transform
        self.slide_index = np.asarray(slide_index)
        self.coords = np.asarray(coords)
        self.labels = np.asarray(labels)
        if not (len(self.slide_index) == len(self.coords) == len(self.labels)):
            raise ValueError("slide_index, coords and labels must have the same length.")

    def __len__(self):
        return len(self.coords)

    def __getitem__(self, i):
        import torch

        s, (y, x) = int(self.slide_index[i]), self.coords[i]
        t = _item_tensor(self.rgb[s, y: y + self.tile, x: x + self.tile], f"slide {s}")
        if self.transform is not None:
            t = self.transform(t)
        return t, torch.as_tensor(self.labels[i])
