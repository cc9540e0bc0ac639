"""The MuseTalk UNet: a diffusers ``UNet2DConditionModel`` built from ``musetalk.json``.

SD-1.x architecture with ``in_channels`` 8 (masked-crop latent ⊕ reference latent),
``out_channels`` 4 and ``cross_attention_dim`` 384 (whisper-tiny features), called once at
timestep 0 with the audio window (plus a sinusoidal positional encoding) as the cross-attention
context. The official files load unchanged and strictly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from digihuman.engines.lipsync.musetalk import weights as W


class PositionalEncoding(nn.Module):
    """The sinusoidal encoding MuseTalk adds to the audio window (sin on even, cos on odd dims).

    Not part of any weight file (the official code builds it at start-up).
    """

    pe: torch.Tensor

    def __init__(self, d_model: int = 384, max_len: int = 5000) -> None:
        super().__init__()
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1], :].to(x.dtype)


def build_unet(config: dict[str, Any], *, meta: bool = False) -> Any:
    """``UNet2DConditionModel`` from a musetalk.json dict (``_``-prefixed keys ignored)."""
    from diffusers import UNet2DConditionModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        if meta:
            with torch.device("meta"):
                return UNet2DConditionModel(**cfg)
        return UNet2DConditionModel(**cfg)
    except (TypeError, ValueError) as exc:
        raise W.BadWeightsError(
            f"musetalk.json is not a UNet2DConditionModel config: {exc}"
        ) from None


class MuseTalkUNet(nn.Module):
    """UNet + positional encoding: (latents (B, 8, 32, 32), audio (B, 50, 384)) → (B, 4, 32, 32)."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet: Any = unet
        self.pe = PositionalEncoding(d_model=int(unet.config.cross_attention_dim))

    def forward(self, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        timesteps = torch.zeros(1, device=latents.device, dtype=torch.long)
        cond = self.pe(audio.to(latents.dtype))
        return self.unet(latents, timesteps, encoder_hidden_states=cond).sample


def load_unet(config_path: Path, weights_path: Path) -> MuseTalkUNet:
    """Build from ``config_path`` and load ``weights_path`` strictly (no random weights)."""
    cfg = W.read_json(config_path)
    net = build_unet(cfg, meta=True)
    state = W.state_dict_of(W.load_checkpoint(weights_path), weights_path)
    W.load_strict(net, state, weights_path, what="MuseTalk UNet", assign=True)
    for name, t in [*net.named_parameters(), *net.named_buffers()]:
        if t.is_meta:  # pragma: no cover - guarded by load_strict
            raise W.BadWeightsError(f"{weights_path}: {name} was not loaded")
    return MuseTalkUNet(net.float().eval())


def describe_config(cfg: dict[str, Any]) -> str:
    need = {"in_channels": 8, "out_channels": 4}
    bad = {k: cfg.get(k) for k, v in need.items() if cfg.get(k) != v}
    if bad:
        raise W.BadWeightsError(f"musetalk.json: expected {need}, found {bad}")
    return (
        f"UNet2DConditionModel in {cfg['in_channels']} out {cfg['out_channels']} "
        f"cross-attn {cfg.get('cross_attention_dim')} blocks {cfg.get('block_out_channels')}"
    )


def verify_file(config_path: Path, weights_path: Path) -> str:
    net = load_unet(config_path, weights_path)
    n = sum(p.numel() for p in net.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in net.parameters()})
    del net
    return f"UNet loads strictly: {n / 1e6:.1f}M params ({', '.join(dtypes)})"
