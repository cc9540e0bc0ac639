"""The ``sd-vae-ft-mse`` AutoencoderKL: 256×256 face crops ↔ 4×32×32 latents (× 0.18215).

The published checkpoint predates diffusers' attention rename: its mid-block attention keys are
``query/key/value/proj_attn``; :func:`convert_vae_keys` maps them to ``to_q/to_k/to_v/to_out.0``
before the strict load.

Encoding follows MuseTalk: pixels / 255, the lower half set to 0 for the masked input (in pixel
space, before the [-1, 1] normalisation), a **posterior sample** (``latent_dist.sample()``) times
the scaling factor. To make it reproducible every frame draws its noise from its own CPU
generator seeded with ``(seed, frame index, masked|full)``, so a frame's latents do not depend
on the batch size, the device or the order frames are prepared in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from digihuman.engines.lipsync.musetalk import weights as W

CROP = 256

_ATTN_RENAME = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def convert_vae_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old diffusers (≤ 0.13) attention key names → current ones; other keys unchanged.

    A 1×1-conv shaped projection (``[C, C, 1, 1]``) is squeezed to the Linear shape.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if "attentions" in parts and len(parts) >= 2 and parts[-2] in _ATTN_RENAME:
            parts[-2] = _ATTN_RENAME[parts[-2]]
            key = ".".join(parts)
            if value.ndim == 4 and value.shape[-2:] == (1, 1):
                value = value[:, :, 0, 0]
        out[key] = value
    return out


def build_vae(config: dict[str, Any]) -> Any:
    from diffusers import AutoencoderKL

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        return AutoencoderKL(**cfg)
    except (TypeError, ValueError) as exc:
        raise W.BadWeightsError(
            f"sd-vae-ft-mse/config.json is not an AutoencoderKL config: {exc}"
        ) from None


def frame_generator(seed: int, frame: int, which: int) -> torch.Generator:
    """The CPU generator of one frame's posterior sample (``which``: 0 masked, 1 full)."""
    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) * 1_000_003 + 2 * int(frame) + int(which)) % (2**63 - 1))
    return g


class MuseTalkVAE:
    """Encode crops to the UNet's 8-channel input; decode predicted latents to crops."""

    def __init__(
        self,
        vae: Any,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        # nn.Module.to: diffusers' ModelMixin.to warns about keep-in-fp32 lists we do not use
        self.vae: Any = nn.Module.to(vae, self.device, dtype).eval()
        self.scaling_factor = float(vae.config.scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)

    @staticmethod
    def preprocess(crops: np.ndarray, *, half_mask: bool) -> torch.Tensor:
        """(B, 256, 256, 3) uint8 RGB → (B, 3, 256, 256) float32 in [-1, 1], contiguous.

        Contiguous (NCHW in memory) as the official ``torch.FloatTensor(np.transpose(...))``
        makes it: a permuted view stays channels-last in memory, and the CPU convolutions then
        take another kernel (latents differ by ~1e-7 instead of being bit-equal).
        """
        x = torch.from_numpy(np.asarray(crops, np.float64) / 255.0).float()
        x = x.permute(0, 3, 1, 2).contiguous()
        if half_mask:
            x[:, :, x.shape[2] // 2 :, :] = 0.0
        return (x - 0.5) / 0.5

    @torch.inference_mode()
    def encode(
        self, crops: np.ndarray, frames: Sequence[int], *, half_mask: bool, seed: int
    ) -> torch.Tensor:
        """Scaled posterior samples (B, 4, 32, 32) float32 of ``crops`` (frame indices given)."""
        x = self.preprocess(crops, half_mask=half_mask).to(self.device, self.dtype)
        dist = self.vae.encode(x).latent_dist
        gens = [frame_generator(seed, f, 0 if half_mask else 1) for f in frames]
        noise = torch.cat([torch.randn(dist.mean.shape[1:], generator=g)[None] for g in gens])
        sample = dist.mean + dist.std * noise.to(dist.mean.device, dist.mean.dtype)
        return (sample * self.scaling_factor).float()

    def latents_for_unet(self, crops: np.ndarray, frames: Sequence[int], seed: int) -> torch.Tensor:
        """(B, 8, 32, 32): masked-crop latents ⊕ full-crop latents (MuseTalk's order)."""
        masked = self.encode(crops, frames, half_mask=True, seed=seed)
        full = self.encode(crops, frames, half_mask=False, seed=seed)
        return torch.cat([masked, full], dim=1)

    @torch.inference_mode()
    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → (B, 256, 256, 3) uint8 RGB on the model's device (no host copy).

        ``(1 / scale) * latents`` as the official ``decode_latents``: ``latents / scale``
        rounds differently (one grey level on ~0.8 % of the pixels).
        """
        z = (1 / self.scaling_factor) * latents.to(self.device, self.dtype)
        img = self.vae.decode(z).sample
        img = (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float()
        return (img * 255).round().to(torch.uint8)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return self.decode_tensor(latents).cpu().numpy()


def load_vae(folder: Path) -> Any:
    folder = Path(folder)
    cfg = W.read_json(W.require(folder.parent, "sd-vae-ft-mse/config.json"))
    net = build_vae(cfg)
    wfile = W.require(folder.parent, "sd-vae-ft-mse/diffusion_pytorch_model.bin")
    state = convert_vae_keys(W.state_dict_of(W.load_checkpoint(wfile), wfile))
    W.load_strict(net, state, wfile, what="AutoencoderKL (sd-vae-ft-mse)")
    return net.float().eval()


def describe_config(cfg: dict[str, Any]) -> str:
    return (
        f"AutoencoderKL latent {cfg.get('latent_channels')} blocks "
        f"{cfg.get('block_out_channels')} scaling {cfg.get('scaling_factor', 0.18215)}"
    )


def verify_file(folder: Path) -> str:
    net = load_vae(folder)
    n = sum(p.numel() for p in net.parameters())
    return f"VAE loads strictly (old attention keys converted): {n / 1e6:.1f}M params"
