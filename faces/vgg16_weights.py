"""ImageNet VGG16 weights from a local file, for torchvision's `vgg16().features`.

Two files work: torchvision's `vgg16-397923af.pth` (a state_dict) and Keras' notop
`vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` (the paper's). Keras' VGG16 was trained on BGR input
in 0..255 minus the Caffe channel means; the conversion folds that into the first convolution (channel
order flipped, kernel scaled by 255·std, bias shifted by the mean difference), so both files take the same
input: RGB in [0, 1] with torchvision's ImageNet normalisation. The Caffe means are 255× torchvision's
means to within 0.5, so the fold is exact up to that difference at the zero-padded border.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.checkpoints import load_checkpoint
from core.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# torchvision's indices of the 13 convolutions in `vgg16().features`, in Keras' block order
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
KERAS_CONV_NAMES = tuple(
    f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, n + 1)
)
DOWNLOAD_HELP = (
    "put one of these files there and set model.weights to its path: torchvision's "
    "https://download.pytorch.org/models/vgg16-397923af.pth, or Keras' "
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 "
    "(or set model.weights=null for a random init)"
)


def load_vgg16_features(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict for `torchvision.models.vgg16().features` from a `.pth` or Keras `.h5` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.weights: VGG16 weights not found: {path} — {DOWNLOAD_HELP}")
    if path.suffix in (".h5", ".hdf5"):
        return keras_h5_to_torch(path)
    state = load_checkpoint(path, key="model.weights")  # data only: a pickle asking for code is refused
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    expected = {f"{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")}
    if set(features) != expected:
        raise UserError(
            f"model.weights: {path} is not a torchvision VGG16 state_dict (features.* keys differ) — {DOWNLOAD_HELP}"
        )
    return features


def keras_h5_to_torch(path: str | Path) -> dict[str, torch.Tensor]:
    """Convert Keras' VGG16 h5 (kernels HWIO, BGR Caffe input) to torch layout (OIHW, normalised RGB input)."""
    import h5py

    state: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f  # a whole-model save keeps weights one level down
        for index, name in zip(CONV_INDICES, KERAS_CONV_NAMES):
            if name not in root:
                raise UserError(
                    f"model.weights: {path} has no layer {name!r}; is it Keras' VGG16 notop file? — {DOWNLOAD_HELP}"
                )
            kernel, bias = (np.asarray(root[name][w]) for w in _weight_names(root[name]))
            if index == 0:
                kernel, bias = _fold_caffe_preprocessing(kernel, bias)
            state[f"{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()
            state[f"{index}.bias"] = torch.from_numpy(bias).float()
    return state


def _weight_names(group) -> list[str]:
    """[kernel, bias] paths inside a Keras layer group (Keras 2 names them in the `weight_names` attribute)."""
    names = group.attrs.get("weight_names")
    if names is not None:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]  # paths relative to the group
    found: list[str] = []
    group.visititems(lambda key, item: found.append(key) if hasattr(item, "shape") else None)
    return sorted(found, key=lambda k: "bias" in k or "_b_" in k)  # kernel first


def _fold_caffe_preprocessing(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Keras input: x_k[c] = 255·x[c'] − caffe_mean[c] (BGR order). Ours: x_t = (x − mean) / std (RGB).
    # So x_k = 255·std·x_t + (255·mean − caffe_mean), channel-reversed.
    rgb_kernel = kernel[:, :, ::-1, :].astype(np.float64)  # input channels BGR → RGB
    std, mean = np.array(IMAGENET_STD), np.array(IMAGENET_MEAN)
    offset = 255.0 * mean - np.array(CAFFE_MEAN_BGR)[::-1]
    folded_bias = bias + np.einsum("hwio,i->o", rgb_kernel, offset)
    return (rgb_kernel * (255.0 * std)[None, None, :, None]).astype(np.float32), folded_bias.astype(np.float32)
