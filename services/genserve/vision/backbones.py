"""Frozen ImageNet convnets in plain PyTorch: VGG16 conv features and an EfficientNet-Lite0 classifier.

Both take images as rgb (B, 3, H, W) in [0, 1], turn them into the input their weights were
trained on with `preprocess`, and expose named intermediate layers through `features`, which
stops at the deepest layer asked for (DeepDream and style transfer call it hundreds of times
per request, mostly on shallow layers). Weights live in safetensors files written by
`genserve.vision.weights`; the header names the architecture, so `load_backbone` rebuilds the
right module from the file alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar, cast

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genserve.common.checkpoint import load_weights, read_header
from genserve.common.model_store import ModelStoreError
from genserve.common.style_request import VGG16_BLOCKS, vgg16_layer_names

FORMAT = "genserve.vision/1"
FETCH_COMMAND = "genserve models fetch"


class WeightsMissing(ModelStoreError):
    """Third-party vision weights have not been fetched and converted yet."""


class Backbone(nn.Module):
    """A convnet whose intermediate layers can be read by name, in network order."""

    architecture: ClassVar[str]
    layer_names: list[str]  # every readable layer, shallow to deep

    def preprocess(self, rgb: Tensor) -> Tensor:
        """rgb (B, 3, H, W) in [0, 1] → the network's input (B, 3, H, W)."""
        raise NotImplementedError

    def fold_batch_norms(self) -> None:
        """Fold eval-mode batch norms into the convolutions before them, in place (for frozen copies
        that run many passes); the activations stay equal up to float rounding. No-op without any."""

    def _layer(self, index: int, x: Tensor) -> Tensor:
        """Run layer `layer_names[index]` on the output of the layer before it."""
        raise NotImplementedError

    def features(self, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """Activations of `layers` for a preprocessed input x (B, 3, H, W), keyed in the order asked.

        Runs the network only up to the deepest requested layer. Raises ValueError for an
        unknown name, listing the valid ones.
        """
        if not layers:
            raise ValueError(f"ask for at least one layer; {self.architecture} has: {', '.join(self.layer_names)}")
        position = {name: index for index, name in enumerate(self.layer_names)}
        unknown = [name for name in layers if name not in position]
        if unknown:
            raise ValueError(
                f"unknown {self.architecture} layer(s) {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(self.layer_names)}"
            )
        wanted = set(layers)
        found: dict[str, Tensor] = {}
        for index in range(max(position[name] for name in layers) + 1):
            x = self._layer(index, x)
            if self.layer_names[index] in wanted:
                found[self.layer_names[index]] = x
        return {name: found[name] for name in layers}


# --- VGG16 ----------------------------------------------------------------------------------

# The Caffe VGG/HED input: BGR on the 0..255 scale minus these per-channel means (BGR order).
VGG16_MEAN_BGR = (104.00699, 116.66877, 122.67892)


class VGG16Features(Backbone):
    """VGG16's 13 conv layers: 3x3 conv (padding 1) + ReLU, 2x2 max pool between blocks.

    Parameters are named like the layers (`conv1_1.weight` (64, 3, 3, 3) OIHW with input
    channels in BGR order, `conv1_1.bias` (64,)), 14,714,688 in all. Each output is
    (B, C, ceil(H / 2^k), ceil(W / 2^k)) after k pools.
    """

    architecture = "vgg16"
    mean_bgr: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.layer_names = vgg16_layer_names()
        in_channels = 3
        for name in self.layer_names:
            if name.startswith("conv"):
                block, conv = (int(part) for part in name[4:].split("_"))
                out_channels = VGG16_BLOCKS[block - 1][conv - 1]
                self.add_module(name, nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
                in_channels = out_channels
            elif name.startswith("relu"):
                # Not in place: a caller may read the conv output before its ReLU (conv4_2 etc.).
                self.add_module(name, nn.ReLU())
            else:
                # ceil_mode matches Keras' 'same' pooling the weights were fine-tuned with: an odd
                # row or column keeps its last pixel instead of being dropped.
                self.add_module(name, nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        # Not persistent: a constant of the architecture, not a weight.
        self.register_buffer("mean_bgr", torch.tensor(VGG16_MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, rgb: Tensor) -> Tensor:
        """rgb (B, 3, H, W) in [0, 1] → BGR on the 0..255 scale minus the channel means."""
        return rgb.flip(1) * 255.0 - self.mean_bgr

    def _layer(self, index: int, x: Tensor) -> Tensor:
        layer: nn.Module = self.get_submodule(self.layer_names[index])
        return layer(x)

    def forward(self, x: Tensor) -> Tensor:
        """Preprocessed x (B, 3, H, W) → relu5_3 (B, 512, ceil(H/16), ceil(W/16))."""
        return self.features(x, ["relu5_3"])["relu5_3"]


# --- EfficientNet-Lite0 ---------------------------------------------------------------------


@dataclass(frozen=True)
class MBConvArgs:
    kernel_size: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


# (repeats, kernel, stride, expand ratio, in, out) per stage: the block strings
# 'r1_k3_s11_e1_i32_o16', ... of efficientnet-lite-pytorch==0.1.0, which Lite0 uses unscaled
# (width and depth coefficients 1.0).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE0_STEM_CHANNELS = 32
LITE0_HEAD_CHANNELS = 1280
# TensorFlow's batch-norm decay 0.99 is PyTorch's momentum 0.01; epsilon 1e-3 as trained.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3


def lite0_blocks() -> list[MBConvArgs]:
    """The 16 blocks: each stage's first block changes width and stride, its repeats keep both."""
    blocks: list[MBConvArgs] = []
    for repeats, kernel, stride, expand, in_channels, out_channels in LITE0_STAGES:
        blocks.append(MBConvArgs(kernel, stride, expand, in_channels, out_channels))
        blocks += [MBConvArgs(kernel, 1, expand, out_channels, out_channels) for _ in range(repeats - 1)]
    return blocks


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding: output ceil(in / stride), the odd pixel padded bottom/right.

    The weights come from TensorFlow, where a stride-2 conv on an even size pads only the
    bottom/right; PyTorch's symmetric padding would shift every later feature map. The padding
    is computed per call so that any image size works (DeepDream runs several octaves).
    """

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        pad_h = max((math.ceil(height / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - height, 0)
        pad_w = max((math.ceil(width / self.stride[1]) - 1) * self.stride[1] + self.kernel_size[1] - width, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand → depthwise kxk → 1x1 linear projection, ReLU6, no squeeze-excite.

    Attribute names (`_expand_conv`, `_bn0`, `_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`)
    are those of efficientnet-lite-pytorch, so the published state dict loads unchanged.
    """

    def __init__(self, args: MBConvArgs) -> None:
        super().__init__()
        hidden = args.in_channels * args.expand_ratio
        self._expand_conv: Conv2dSame | None = None
        self._bn0: nn.BatchNorm2d | None = None
        if args.expand_ratio != 1:
            self._expand_conv = Conv2dSame(args.in_channels, hidden, kernel_size=1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel_size=args.kernel_size, stride=args.stride, groups=hidden, bias=False
        )
        self._bn1 = _batch_norm(hidden)
        self._project_conv = Conv2dSame(hidden, args.out_channels, kernel_size=1, bias=False)
        self._bn2 = _batch_norm(args.out_channels)
        # Drop-connect (stochastic depth) only acts in training; these weights are served frozen.
        self.residual = args.stride == 1 and args.in_channels == args.out_channels

    def forward(self, inputs: Tensor) -> Tensor:
        """(B, in, H, W) → (B, out, ceil(H / stride), ceil(W / stride))."""
        x = inputs
        if self._expand_conv is not None and self._bn0 is not None:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))  # linear bottleneck: no activation
        return x + inputs if self.residual else x

    def fold_batch_norms(self) -> None:
        """Each batch norm into the convolution before it (see Backbone.fold_batch_norms)."""
        if self._expand_conv is not None and self._bn0 is not None:
            fold_batch_norm(self._expand_conv, self._bn0)
            self._bn0 = nn.Identity()  # type: ignore[assignment]
        fold_batch_norm(self._depthwise_conv, self._bn1)
        fold_batch_norm(self._project_conv, self._bn2)
        self._bn1 = self._bn2 = nn.Identity()  # type: ignore[assignment]


def fold_batch_norm(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Fold an eval-mode BatchNorm2d that follows `conv` into its weight and bias."""
    assert isinstance(norm, nn.BatchNorm2d) and norm.running_var is not None and norm.running_mean is not None
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.weight = nn.Parameter((conv.weight * scale.view(-1, 1, 1, 1)).detach(), requires_grad=False)
    conv.bias = nn.Parameter(bias.detach(), requires_grad=False)


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 ImageNet classifier (Tan & Le; the Lite variant: ReLU6, no SE, fixed stem/head).

    Layers: "stem" (B, 32, H/2, W/2); "blocks.0" … "blocks.15" at stride 2 (blocks.0), 4 (1–2),
    8 (3–4), 16 (5–10) and 32 (11–15); "head" (B, 1280, H/32, W/32); "logits" (B, 1000). Sizes
    round up (TensorFlow 'SAME'), so any H, W works. Parameter names
    follow efficientnet-lite-pytorch (`_conv_stem`, `_bn0`, `_blocks`, `_conv_head`, `_bn1`, `_fc`).
    Trained at 224x224.
    """

    architecture = "efficientnet-lite0"
    image_size = 224
    num_classes = 1000

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, LITE0_STEM_CHANNELS, kernel_size=3, stride=2, bias=False)
        self._bn0 = _batch_norm(LITE0_STEM_CHANNELS)
        self._blocks = nn.ModuleList(MBConvBlock(args) for args in lite0_blocks())
        last = lite0_blocks()[-1].out_channels
        self._conv_head = Conv2dSame(last, LITE0_HEAD_CHANNELS, kernel_size=1, bias=False)
        self._bn1 = _batch_norm(LITE0_HEAD_CHANNELS)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(LITE0_HEAD_CHANNELS, self.num_classes)
        self.layer_names = ["stem", *(f"blocks.{i}" for i in range(len(self._blocks))), "head", "logits"]

    def preprocess(self, rgb: Tensor) -> Tensor:
        """rgb (B, 3, H, W) in [0, 1] → (rgb·255 − 127) / 128, about [−1, 1] (TF EfficientNet-Lite)."""
        return (rgb * 255.0 - 127.0) / 128.0

    def fold_batch_norms(self) -> None:
        """The stem's and every block's (the head's is left: dreams read blocks, not the head)."""
        fold_batch_norm(self._conv_stem, self._bn0)
        self._bn0 = nn.Identity()  # type: ignore[assignment]
        for block in self._blocks:
            cast(MBConvBlock, block).fold_batch_norms()

    def _layer(self, index: int, x: Tensor) -> Tensor:
        if index == 0:
            return F.relu6(self._bn0(self._conv_stem(x)))
        if index <= len(self._blocks):
            block: nn.Module = self._blocks[index - 1]
            return block(x)
        if index == len(self._blocks) + 1:
            return F.relu6(self._bn1(self._conv_head(x)))
        pooled = x.mean(dim=(2, 3))  # global average pool: (B, 1280)
        return self._fc(self._dropout(pooled))

    def forward(self, x: Tensor) -> Tensor:
        """Preprocessed x (B, 3, H, W) → ImageNet logits (B, 1000)."""
        return self.features(x, ["logits"])["logits"]


# --- files ----------------------------------------------------------------------------------

ARCHITECTURES: dict[str, type[Backbone]] = {
    VGG16Features.architecture: VGG16Features,
    EfficientNetLite0.architecture: EfficientNetLite0,
}

B = TypeVar("B", bound=Backbone)


def serialise(model: Backbone, metadata: Mapping[str, str]) -> bytes:
    """The model's safetensors bytes, with the header's metadata keys in sorted order.

    safetensors writes `__metadata__` from a hash map whose order changes from run to run; the
    manifest pins the file's sha256, so a re-conversion must give the very same bytes.
    """
    header_fields = {
        **metadata,
        "format": FORMAT,
        "architecture": model.architecture,
        "layer_names": json.dumps(model.layer_names),
    }
    raw = safetensors.torch.save({k: v.contiguous() for k, v in model.state_dict().items()})
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(header_fields.items())), **header}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keeps the tensor data 8-byte aligned, as safetensors does
    return len(text).to_bytes(8, "little") + text + raw[8 + size :]


def read_metadata(path: Path) -> dict[str, str]:
    """The header of a vision weight file; raises WeightsMissing if it was never fetched."""
    if not path.exists():
        raise WeightsMissing(f"vision weights {path} are missing; run `{FETCH_COMMAND}` to fetch and convert them")
    return read_header(path, FORMAT, "genserve vision weight file")


def load_backbone(path: Path, device: torch.device | str = "cpu") -> Backbone:
    """Rebuild the backbone a weight file describes, frozen (eval mode, no weight gradients).

    Gradients still flow to the input, which is what DeepDream and style transfer optimise.
    """
    metadata = read_metadata(path)
    architecture = metadata.get("architecture", "")
    if architecture not in ARCHITECTURES:
        raise ModelStoreError(f"{path}: unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    model = ARCHITECTURES[architecture]()
    load_weights(model, path, device)
    return model


def load_as(kind: type[B], path: Path, device: torch.device | str = "cpu") -> B:
    """`load_backbone`, checked to be of the expected class (e.g. VGG16Features for style transfer)."""
    model = load_backbone(path, device)
    if not isinstance(model, kind):
        raise ModelStoreError(f"{path} holds {model.architecture}, not {kind.architecture}")
    return model
