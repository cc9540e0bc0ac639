"""Pasting the generated face back: BiSeNet face parsing, the blend mask, the composite.

The computation of MuseTalk's ``musetalk/utils/blending.py`` and ``face_parsing``, re-written:

* the face box is expanded to a square ``crop_box`` (centre ± ``int(max(w, h) // 2 * expand)``,
  ``expand`` 1.2 in the v1.0 release, 1.5 in v1.5);
  that region of the **source** frame (zero-filled outside the image) is parsed by BiSeNet at
  512×512 (bilinear resize, ImageNet normalisation); the parsing is resized back (bicubic);
* mask: labels 1–13 (the v1.0 release: the face without hair and neck), or v1.5's "jaw" mode
  (the skin dilated downwards by a cone kernel, eroded at the cheeks, nose excluded, plus the
  lips) — then only the part inside the face box and below the middle of the crop box is kept,
  and it is Gaussian-blurred (kernel ``0.1 × size`` in v1.0, ``0.05 × size`` in v1.5, odd);
* composite: the generated face (resized to the box) is pasted into the crop, which is blended
  into the frame through the mask with PIL's rounding (``(a·m + b·(255 − m) + 128) / 255``).

The mask depends only on the source frame, so it is computed once per frame at preparation.
The network is written here in plain torch with the key names of ``79999_iter.pth``; its
ResNet-18 backbone file (``resnet18-5c106cde.pth``, torchvision's ImageNet weights) is checked
too, as the official code loads it first.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digihuman.engines.lipsync.musetalk import weights as W

PARSE_SIZE = 512
LABELS_RAW = (1, 11, 12, 13)
LABEL_NOSE = 10

# ---------------------------------------------------------------------------------------------
# the network (key names of face-parsing.PyTorch's 79999_iter.pth)
# ---------------------------------------------------------------------------------------------


class _ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(self.bn1(self.conv1(x)))
        r = self.bn2(self.conv2(r))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(s + r)


class ResNet18(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(_BasicBlock(64, 64), _BasicBlock(64, 64))
        self.layer2 = nn.Sequential(_BasicBlock(64, 128, 2), _BasicBlock(128, 128))
        self.layer3 = nn.Sequential(_BasicBlock(128, 256, 2), _BasicBlock(256, 256))
        self.layer4 = nn.Sequential(_BasicBlock(256, 512, 2), _BasicBlock(512, 512))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class _ARM(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        att = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * att


class _ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = _ARM(256, 128)
        self.arm32 = _ARM(512, 128)
        self.conv_head32 = _ConvBNReLU(128, 128)
        self.conv_head16 = _ConvBNReLU(128, 128)
        self.conv_avg = _ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        avg = self.conv_avg(f32.mean(dim=(2, 3), keepdim=True))
        s32 = self.arm32(f32) + F.interpolate(avg, f32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(s32, f16.shape[2:], mode="nearest"))
        s16 = self.arm16(f16) + up32
        up16 = self.conv_head16(F.interpolate(s16, f8.shape[2:], mode="nearest"))
        return f8, up16, up32


class _FFM(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = _ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([a, b], dim=1))
        att = feat.mean(dim=(2, 3), keepdim=True)
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(att))))
        return feat * att + feat


class _Output(nn.Module):
    def __init__(self, cin: int, cmid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = _ConvBNReLU(cin, cmid)
        self.conv_out = nn.Conv2d(cmid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet (ResNet-18 context path; the 1/8 ResNet feature replaces the spatial path)."""

    def __init__(self, n_classes: int = 19) -> None:
        super().__init__()
        self.cp = _ContextPath()
        self.ffm = _FFM(256, 256)
        self.conv_out = _Output(256, 256, n_classes)
        # auxiliary heads: unused at inference, present in the checkpoint
        self.conv_out16 = _Output(128, 64, n_classes)
        self.conv_out32 = _Output(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB → (B, n_classes, H, W) logits (the main head)."""
        f8, cp8, _ = self.cp(x)
        out = self.conv_out(self.ffm(f8, cp8))
        return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=True)


def load_parser_net(folder: Path) -> BiSeNet:
    """Strictly load ``79999_iter.pth`` (and check ``resnet18-5c106cde.pth``) from ``folder``."""
    folder = Path(folder)
    verify_backbone(folder)
    wfile = W.require(folder.parent, "face-parse-bisent/79999_iter.pth")
    net = BiSeNet()
    state = W.state_dict_of(W.load_checkpoint(wfile), wfile)
    W.load_strict(net, state, wfile, what="BiSeNet face parsing", ignore=W.ignore_bn_counters)
    return net.eval()


def verify_backbone(folder: Path) -> str:
    """The ImageNet ResNet-18 file: every trunk key present with the right shape."""
    wfile = W.require(Path(folder).parent, "face-parse-bisent/resnet18-5c106cde.pth")
    state = W.state_dict_of(W.load_checkpoint(wfile), wfile)

    def ignore(k: str) -> bool:  # the ImageNet classifier is not part of the trunk
        return k.startswith("fc.") or W.ignore_bn_counters(k)

    W.load_strict(ResNet18(), state, wfile, what="ResNet-18 backbone", ignore=ignore)
    return "ResNet-18 trunk loads strictly"


def verify_parsing(folder: Path) -> str:
    net = load_parser_net(folder)
    n = sum(p.numel() for p in net.parameters())
    return f"BiSeNet loads strictly: {n / 1e6:.1f}M params, 19 classes"


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------


def jaw_kernel(cone_height: int = 21, tail_height: int = 12) -> np.ndarray:
    """The downward cone-plus-tail dilation kernel of MuseTalk v1.5's 'jaw' mode."""
    size = cone_height + tail_height
    k = np.zeros((size, size), np.uint8)
    cx = size // 2
    for row in range(cone_height // 2, cone_height):
        width = 2 * (row - cone_height // 2) + 1
        k[row, cx - width // 2 : cx + width // 2 + 1] = 1
    base = int(k[cone_height - 1].sum())
    k[cone_height:, max(0, cx - base // 2) : min(size, cx + base // 2 + 1)] = 1
    return k


def cheek_mask(left: int = 90, right: int = 90, size: int = PARSE_SIZE) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    c = size // 2
    m[:, : c - left + 1] = 255
    m[:, c + right :] = 255
    return m


def labels_to_mask(labels: np.ndarray, mode: str, *, cheek_width: int = 90) -> np.ndarray:
    """(512, 512) parsing labels → uint8 {0, 255} mask for ``mode``.

    'v1': the v1.0 release (labels 1–13: the whole face, brows, eyes, ears, nose, mouth, lips);
    'raw': skin, mouth and lips (current upstream default); 'jaw' (v1.5); 'neck'.
    """
    if mode == "v1":
        return np.where((labels >= 1) & (labels <= 13), 255, 0).astype(np.uint8)
    if mode == "neck":
        return np.where(np.isin(labels, (1, 11, 12, 13, 14)), 255, 0).astype(np.uint8)
    if mode == "jaw":
        face = np.where(labels == 1, 255, 0).astype(np.uint8)
        dilated = cv2.dilate(face, jaw_kernel(), iterations=1)
        eroded = cv2.erode(dilated, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3)),
                           iterations=2)  # fmt: skip
        cm = cheek_mask(cheek_width, cheek_width)
        region = cv2.bitwise_or(cv2.bitwise_and(eroded, cm), cv2.bitwise_and(dilated, 255 - cm))
        keep = ((region == 255) & (labels != LABEL_NOSE)) | np.isin(labels, (11, 12, 13))
        return np.where(keep, 255, 0).astype(np.uint8)
    if mode != "raw":
        from digihuman.errors import InputError

        raise InputError(f"unknown parsing mode {mode!r}; use v1, raw, jaw or neck")
    return np.where(np.isin(labels, LABELS_RAW), 255, 0).astype(np.uint8)


def expand_box(box: tuple[int, int, int, int], expand: float = 1.5) -> tuple[int, int, int, int]:
    """MuseTalk's square crop box around ``box`` (integer arithmetic as the official code)."""
    x, y, x1, y1 = box
    xc, yc = (x + x1) // 2, (y + y1) // 2
    s = int(max(x1 - x, y1 - y) // 2 * expand)
    return xc - s, yc - s, xc + s, yc + s


def crop_padded(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with zeros where the box leaves the image (PIL ``crop``)."""
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *image.shape[2:]), image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


class FaceParser:
    """BiSeNet on 512×512 crops → label maps, batched."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, net: BiSeNet, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).float().eval()

    @torch.inference_mode()
    def labels(self, crops: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops of any size → (B, 512, 512) int64 labels."""
        from PIL import Image

        xs = []
        for c in crops:
            im = Image.fromarray(np.ascontiguousarray(c)).resize(
                (PARSE_SIZE, PARSE_SIZE), Image.Resampling.BILINEAR
            )
            xs.append(np.asarray(im, np.float32) / 255.0)
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).to(self.device)
        mean = torch.tensor(self.MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=self.device).view(1, 3, 1, 1)
        logits = self.net((x - mean) / std)
        return logits.argmax(1).cpu().numpy()


def blend_mask(
    labels: np.ndarray,
    face_box: tuple[int, int, int, int],
    crop_box: tuple[int, int, int, int],
    *,
    mode: str,
    upper_boundary_ratio: float = 0.5,
    blur_ratio: float = 0.05,
    cheek_width: int = 90,
) -> np.ndarray:
    """The feathered uint8 mask (crop-box sized) for one frame from its parsing labels."""
    from PIL import Image

    x, y, x1, y1 = face_box
    xs, ys, xe, ye = crop_box
    size = (xe - xs, ye - ys)
    seg = Image.fromarray(labels_to_mask(labels, mode, cheek_width=cheek_width))
    seg_np = np.asarray(seg.resize(size, Image.Resampling.BICUBIC))
    mask = np.zeros((size[1], size[0]), np.uint8)
    ry0, ry1, rx0, rx1 = y - ys, y1 - ys, x - xs, x1 - xs
    mask[max(ry0, 0) : ry1, max(rx0, 0) : rx1] = seg_np[max(ry0, 0) : ry1, max(rx0, 0) : rx1]
    top = int(size[1] * upper_boundary_ratio)
    mask[:top] = 0
    k = int(blur_ratio * size[0] // 2 * 2) + 1
    return cv2.GaussianBlur(mask, (k, k), 0)


def paste(
    frame: np.ndarray,
    face: np.ndarray,
    face_box: tuple[int, int, int, int],
    mask: np.ndarray,
    crop_box: tuple[int, int, int, int],
) -> np.ndarray:
    """Composite ``face`` (already box-sized RGB) into a copy of ``frame`` through ``mask``.

    Equals MuseTalk's ``get_image_blending`` (PIL paste with an 'L' mask), in numpy.
    """
    x, y, x1, y1 = face_box
    xs, ys, xe, ye = crop_box
    h, w = frame.shape[:2]
    large = crop_padded(frame, crop_box)
    large[y - ys : y1 - ys, x - xs : x1 - xs] = face
    out = frame.copy()
    # the part of the crop box inside the frame
    fx0, fy0, fx1, fy1 = max(xs, 0), max(ys, 0), min(xe, w), min(ye, h)
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    m = mask[fy0 - ys : fy1 - ys, fx0 - xs : fx1 - xs].astype(np.uint32)[..., None]
    src = large[fy0 - ys : fy1 - ys, fx0 - xs : fx1 - xs].astype(np.uint32)
    dst = out[fy0:fy1, fx0:fx1].astype(np.uint32)
    t = src * m + dst * (255 - m) + 128
    out[fy0:fy1, fx0:fx1] = ((t + (t >> 8)) >> 8).astype(np.uint8)
    return out


def resize_face(face: np.ndarray, face_box: tuple[int, int, int, int]) -> np.ndarray:
    """The decoded 256×256 crop resized to the face box (cv2 bilinear, as the official code)."""
    x, y, x1, y1 = face_box
    return cv2.resize(face, (x1 - x, y1 - y))
