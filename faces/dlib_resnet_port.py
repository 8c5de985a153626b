"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) as a PyTorch module, read from
dlib's own file, so that the descriptor runs where dlib cannot (ONNX Runtime in the browser).

The network is the one of dlib's examples/dnn_face_recognition_ex.cpp (`anet_type`): a 150×150 RGB chip,
con 32 7×7/2 → affine → relu → max_pool 3×3/2, then 29 residual blocks' worth of 3×3 convolutions in five levels
(3×32, 1+3×64 down, 1+2×128 down, 1+2×256 down, 1×256 down), avg_pool_everything and fc_no_bias 128. The
trained net stores its batch norms as `affine_` layers (per-channel scale and shift). Two dlib behaviours the
port keeps: the input is (pixel − channel mean) / 256 (`input_rgb_image_sized`), and `add_prev_` of tensors of
different shapes zero-pads both to the larger one, aligned top-left (dlib's `tt::add`), which happens where a
down block's 3×3/2 convolution and its 2×2/2 average-pooled shortcut disagree (8×8 → 3×3 vs 4×4).

The file is dlib's binary serialization (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, loss.h, tensor.h):
a network is written outermost layer first, each `add_layer` as its version, its sub-network, then its layer's
details; so the layers' details come out innermost (input side) first. The reader checks every layer's name and
version against the architecture above and fails with one line naming the file otherwise (`DlibFormatError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.errors import UserError

DESCRIPTOR_SIZE = 128
CHIP_SIZE = 150  # input_rgb_image_sized<150>
# dlib's float_details codes for the special values (dlib/float_details.h)
_FLOAT_SPECIAL = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}


class DlibFormatError(UserError):
    """The file is not dlib's face-recognition ResNet as this port reads it."""


@dataclass
class DlibLayer:
    """One layer as read from the file: its dlib name (`con_`, `affine_`, `relu_`, `max_pool_`, `avg_pool_`,
    `add_prev_`, `fc_`, `tag`, `skip`), its hyperparameters and its parameter arrays (float32)."""

    kind: str
    options: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


class _Reader:
    """dlib's serialization primitives over the file's bytes (dlib/serialize.h)."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(
            f"{self.path}: not dlib's face-recognition ResNet as expected: {what} at byte {self.pos} "
            "(the file from `face-recognition-models`, dlib_face_recognition_resnet_model_v1.dat, is)"
        )

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"file ends early (wanted {n} more bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        """dlib's packed integer: a control byte (low nibble: byte count, bit 7: negative), then the magnitude's
        bytes, least significant first."""
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        """dlib's portable float (float_details): an int64 mantissa and an int16 exponent, value = m·2^e."""
        mantissa, exponent = self.int(), self.int()
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1", b"\x00", b"\x01"):
            raise self.fail(f"bad bool byte {byte!r}")
        return byte in (b"1", b"\x01")

    def string(self) -> str:
        size = self.int()
        if not 0 <= size <= 1024:
            raise self.fail(f"implausible string length {size}")
        return self.take(size).decode("latin-1")

    def expect_string(self, *names: str) -> str:
        start = self.pos
        name = self.string()
        if name not in names:
            self.pos = start
            raise self.fail(f"layer {name!r} where {' or '.join(map(repr, names))} belongs")
        return name

    def expect_version(self, what: str, *versions: int) -> int:
        version = self.int()
        if version not in versions:
            raise self.fail(f"{what} version {version}, expected {versions}")
        return version

    def tensor(self) -> np.ndarray:
        """dlib's tensor (dlib/dnn/tensor.h): version, num_samples, k, nr, nc, then the values — version 2 as
        little-endian float32, version 1 as dlib floats. Returned as float32 (n, k, nr, nc)."""
        version = self.expect_version("tensor", 1, 2)
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"negative tensor shape {shape}")
        count = int(np.prod(shape))
        if version == 2:
            values = np.frombuffer(self.take(4 * count), "<f4")
        else:
            values = np.array([self.float() for _ in range(count)], np.float32)
        return values.astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.expect_version("alias_tensor", 1)
        return tuple(self.int() for _ in range(4))


# The layers of `anet_type`, outermost first, as dlib writes them (dnn_face_recognition_ex.cpp).
def _block(n: int, stride: int) -> list[tuple]:
    """block<N,affine,stride> = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,stride,stride,SUBNET>>>>>."""
    return [("affine_",), ("con_", n, 1), ("relu_",), ("affine_",), ("con_", n, stride)]


def _ares(n: int) -> list[tuple]:
    """ares<N> = relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>."""
    return [("relu_",), ("add_prev_", 1), *_block(n, 1), ("tag", 1)]


def _ares_down(n: int) -> list[tuple]:
    """ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>."""
    return [("relu_",), ("add_prev_", 2), ("avg_pool_", 2), ("skip", 1), ("tag", 2), *_block(n, 2), ("tag", 1)]


ARCHITECTURE: list[tuple] = [
    ("fc_", DESCRIPTOR_SIZE),
    ("avg_pool_", 0),  # avg_pool_everything
    *_ares_down(256),  # alevel0
    *_ares(256),
    *_ares(256),
    *_ares_down(256),  # alevel1
    *_ares(128),
    *_ares(128),
    *_ares_down(128),  # alevel2
    *_ares(64),
    *_ares(64),
    *_ares(64),
    *_ares_down(64),  # alevel3
    *_ares(32),
    *_ares(32),
    *_ares(32),  # alevel4
    ("max_pool_", 3),
    ("relu_",),
    ("affine_",),
    ("con_", 32, 2),
]


def _layer_details(r: _Reader, spec: tuple) -> DlibLayer:
    """One layer's details (dlib/dnn/layers.h), checked against its place in ARCHITECTURE."""
    kind = spec[0]
    if kind == "con_":
        version = r.expect_string("con_4", "con_5", "con_6")
        params = r.tensor()
        o = {k: r.int() for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        filters, biases = r.alias_tensor(), r.alias_tensor()
        for _ in range(4):  # learning-rate and weight-decay multipliers (training only)
            r.float()
        use_bias = r.bool() if version in ("con_5", "con_6") else True
        if version == "con_6":
            r.bool()  # use_relu: a fused relu, never set in this net (checked below by the layer sequence)
        if (o["num_filters"], o["stride_y"]) != spec[1:] or o["stride_x"] != o["stride_y"]:
            raise r.fail(f"con_ {o} where {spec[1]} filters, stride {spec[2]} belong")
        n_weights = int(np.prod(filters))
        flat = params.reshape(-1)
        if flat.size != n_weights + (filters[0] if use_bias else 0):
            raise r.fail(f"con_ holds {flat.size} parameters for filters {filters} and biases {biases}")
        arrays = {"weight": flat[:n_weights].reshape(filters)}
        arrays["bias"] = flat[n_weights:] if use_bias else np.zeros(filters[0], np.float32)
        return DlibLayer(kind, o, arrays)
    if kind == "affine_":
        r.expect_string("affine_")
        params = r.tensor().reshape(-1)
        gamma, _ = r.alias_tensor(), r.alias_tensor()  # beta: the second half of params
        mode = r.int()  # dlib layer_mode: CONV_MODE = 0, FC_MODE = 1
        if mode != 0 or gamma[0] != 1 or gamma[2:] != (1, 1) or params.size != 2 * gamma[1]:
            raise r.fail(f"affine_ mode {mode}, gamma {gamma}: expected per-channel (CONV_MODE) scale and shift")
        return DlibLayer(kind, {}, {"gamma": params[: gamma[1]], "beta": params[gamma[1] :]})
    if kind == "relu_":
        r.expect_string("relu_")
        return DlibLayer(kind)
    if kind in ("max_pool_", "avg_pool_"):
        r.expect_string(f"{kind}2")
        o = {k: r.int() for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        if o["nr"] != spec[1] or o["nc"] != spec[1]:
            raise r.fail(f"{kind} window {o['nr']}×{o['nc']} where {spec[1]}×{spec[1]} belongs")
        return DlibLayer(kind, o)
    if kind == "add_prev_":
        r.expect_string("add_prev_")
        return DlibLayer(kind, {"tag": spec[1]})
    if kind == "fc_":
        r.expect_string("fc_2")
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor().reshape(-1)
        weights = r.alias_tensor()
        r.alias_tensor()  # biases
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        if num_outputs != spec[1] or bias_mode != 1 or params.size != num_inputs * num_outputs:
            raise r.fail(f"fc_ {num_inputs}→{num_outputs}, bias mode {bias_mode}: expected fc_no_bias<{spec[1]}>")
        # dlib computes x·W with W (num_inputs, num_outputs) row-major
        return DlibLayer(kind, {}, {"weight": params.reshape(weights[0], weights[1]).T.copy()})
    raise AssertionError(kind)


def read_dlib_resnet(path: str | Path) -> tuple[np.ndarray, list[DlibLayer]]:
    """Read dlib's face ResNet file: the input's channel means (R, G, B, in 0–255 pixels) and the layers in
    forward order (input side first, `tag`/`skip` included). Raises DlibFormatError (one line naming `path`)
    when the file is not this network, FileNotFoundError when it is missing."""
    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    r.expect_version("add_loss_layer", 1)
    r.expect_string("loss_metric_", "loss_metric_2")
    r.float(), r.float()  # margin, distance threshold (training only)
    layers: list[DlibLayer] = []
    means = _read_net(r, 0, layers)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes after the network")
    return means, layers


def _read_net(r: _Reader, index: int, layers: list[DlibLayer]) -> np.ndarray:
    """The sub-network from ARCHITECTURE[index] inward; appends its layers (input side first) to `layers` and
    returns the input layer's channel means. Written as a loop over the nesting to spare Python's stack."""
    # descend: every add_layer / tag / skip writes its version before its sub-network
    input_side = len(ARCHITECTURE) - 1
    for i in range(index, len(ARCHITECTURE)):
        kind = ARCHITECTURE[i][0]
        if kind in ("tag", "skip"):
            r.expect_version(f"add_{kind}_layer", 1)
        else:
            r.expect_version("add_layer", *((2, 3) if i == input_side else (1, 2)))
    # the input layer, then each layer's details and training state, innermost first
    r.expect_string("input_rgb_image_sized")
    means = np.array([r.float() for _ in range(3)], np.float32)
    size = (r.int(), r.int())
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise r.fail(f"input size {size}, expected {CHIP_SIZE}×{CHIP_SIZE}")
    for i in range(len(ARCHITECTURE) - 1, index - 1, -1):
        spec = ARCHITECTURE[i]
        if spec[0] in ("tag", "skip"):
            layers.append(DlibLayer(spec[0], {"id": spec[1]}))
            continue
        layers.append(_layer_details(r, spec))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_..._disabled
            r.bool()
        for _ in range(2):  # x_grad, cached_output
            r.tensor()
        r.tensor()  # add_layer v2: params_grad; the input-side add_layer: grad_final
        if i == input_side:
            r.int()  # _sample_expansion_factor
    return means


class _Affine(nn.Module):
    """dlib's affine_ in CONV_MODE: x·γ + β per channel (the trained net's batch norm)."""

    def __init__(self, gamma: np.ndarray, beta: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("gamma", torch.from_numpy(gamma.copy()).view(1, -1, 1, 1))
        self.register_buffer("beta", torch.from_numpy(beta.copy()).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


def _conv(layer: DlibLayer) -> nn.Conv2d:
    o, weight = layer.options, layer.arrays["weight"]
    conv = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        (o["nr"], o["nc"]),
        stride=(o["stride_y"], o["stride_x"]),
        padding=(o["padding_y"], o["padding_x"]),
    )
    conv.weight.data = torch.from_numpy(weight.copy())
    conv.bias.data = torch.from_numpy(layer.arrays["bias"].copy())
    return conv.requires_grad_(False)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev_: both zero-padded (bottom, right, extra channels) to the larger shape, then summed."""
    # Python ints: the ONNX trace freezes the padding, right for the fixed 150-px chip (a TracerWarning says so)
    k, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, k - t.shape[1]))

    return pad(a) + pad(b)


class _Residual(nn.Module):
    """ares / ares_down: relu(block(x) ⊕ shortcut(x)), shortcut = x, or avg_pool 2×2/2 of x for a down block,
    ⊕ = dlib's add_prev_ (`_add_padded`)."""

    def __init__(self, conv1: nn.Conv2d, affine1: _Affine, conv2: nn.Conv2d, affine2: _Affine, pool: dict | None):
        super().__init__()
        self.conv1, self.affine1, self.conv2, self.affine2 = conv1, affine1, conv2, affine2
        self.pool = pool  # avg_pool_ options of the shortcut, None for an identity shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        if self.pool is not None:
            p = self.pool
            x = F.avg_pool2d(x, (p["nr"], p["nc"]), (p["stride_y"], p["stride_x"]), (p["padding_y"], p["padding_x"]))
        return F.relu(_add_padded(y, x))


class DlibFaceResnet(nn.Module):
    """dlib's face descriptor network: RGB chips (B, 3, 150, 150), 0–255 (uint8 or float; a chip as
    `dlib.get_face_chip` makes it) → float32 descriptors (B, 128), the values dlib's `compute_face_descriptor`
    gives for the chip (Euclidean distance ≤ 0.6: the same person, by the model's training)."""

    def __init__(self, means: np.ndarray, layers: list[DlibLayer]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(means.copy()).view(1, 3, 1, 1))
        it = iter(layers)

        def take(kind: str) -> DlibLayer:
            layer = next(it)
            assert layer.kind == kind, (layer.kind, kind)  # read_dlib_resnet checked the order
            return layer

        stem_conv = _conv(take("con_"))
        stem_affine = _Affine(**take("affine_").arrays)
        take("relu_")
        pool = take("max_pool_").options
        self.stem = nn.Sequential(
            stem_conv,
            stem_affine,
            nn.ReLU(),
            nn.MaxPool2d(
                (pool["nr"], pool["nc"]), (pool["stride_y"], pool["stride_x"]), (pool["padding_y"], pool["padding_x"])
            ),
        )
        blocks = []
        for layer in it:
            if layer.kind == "avg_pool_":  # avg_pool_everything: the blocks are done
                break
            assert layer.kind == "tag"
            conv1, affine1 = _conv(take("con_")), _Affine(**take("affine_").arrays)
            take("relu_")
            conv2, affine2 = _conv(take("con_")), _Affine(**take("affine_").arrays)
            shortcut = next(it)
            if shortcut.kind == "tag":  # down block: tag2, skip1, avg_pool
                take("skip")
                shortcut_pool = take("avg_pool_").options
                take("add_prev_")
            else:
                assert shortcut.kind == "add_prev_"
                shortcut_pool = None
            take("relu_")
            blocks.append(_Residual(conv1, affine1, conv2, affine2, shortcut_pool))
        self.blocks = nn.Sequential(*blocks)
        fc = take("fc_").arrays["weight"]
        self.fc = nn.Linear(fc.shape[1], fc.shape[0], bias=False).requires_grad_(False)
        self.fc.weight.data = torch.from_numpy(fc)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips.float() - self.mean) / 256.0  # input_rgb_image_sized: (pixel − mean) / 256
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def load_dlib_face_resnet(path: str | Path | None = None) -> DlibFaceResnet:
    """The port of `path` (default: `dlib_face_recognition_resnet_model_v1.dat` of `face-recognition-models`),
    in eval mode. Raises DlibFormatError as `read_dlib_resnet`, UserError when the default file is missing."""
    if path is None:
        from faces.detectors import dlib_model_path

        path = dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
    return DlibFaceResnet(*read_dlib_resnet(path)).eval()
