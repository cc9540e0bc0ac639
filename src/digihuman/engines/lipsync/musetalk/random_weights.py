"""Random weights in the official file layout, for tests and benchmarks (never for users).

``write_layout(models_dir, version, size="full")`` writes every file MuseTalk ``version`` needs
with the official names, configs, key names, dtypes and shapes (the VAE with the old attention
key names, whisper ``tiny.pt`` in fp16 with its ``dims``, the v1.5 whisper as a Hugging Face
folder), filled with random numbers. ``size="tiny"`` writes the same families at small widths
(same layout, same loaders) so the CPU tests stay fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from digihuman.engines.lipsync.musetalk.audio_features import HF_TO_OPENAI_BLOCK_KEYS

# musetalk/musetalk.json and musetalkV15/musetalk.json (identical architectures)
UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}

# stabilityai/sd-vae-ft-mse config.json (diffusers 0.4.2: no scaling_factor, default 0.18215)
VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

WHISPER_DIMS: dict[str, int] = {
    "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
    "n_audio_layer": 4, "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 384,
    "n_text_head": 6, "n_text_layer": 4,
}  # fmt: skip

TINY_UNET = {
    **UNET_CONFIG,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "cross_attention_dim": 16,
    "norm_num_groups": 8,
    "sample_size": 32,
}
TINY_VAE = {
    **VAE_CONFIG,
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "norm_num_groups": 4,
}
TINY_WHISPER = {**WHISPER_DIMS, "n_audio_state": 16, "n_audio_head": 2, "n_audio_layer": 2,
                "n_text_state": 16, "n_text_head": 2, "n_text_layer": 1,
                "n_vocab": 100}  # fmt: skip


def _randomise(module: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A state dict of ``module``'s shapes: normal(0, 0.02) weights, 0 biases, 1 norm scales."""
    out = {}
    for name, t in module.state_dict().items():
        if t.dtype in (torch.int64, torch.long):
            out[name] = torch.zeros_like(t, device="cpu")
            continue
        shape = tuple(t.shape)
        leaf = name.rsplit(".", 1)[-1]
        is_norm = any(s in name for s in ("norm", "_ln", "ln_post", "bn", "layer_norm", ".ln."))
        if leaf == "bias" or leaf == "running_mean":
            v = torch.zeros(shape)
        elif leaf == "running_var" or (is_norm and leaf == "weight"):
            v = torch.ones(shape)
        elif name.endswith("positional_embedding") or name.endswith("embed_positions.weight"):
            from .audio_features import sinusoids

            v = sinusoids(shape[0], shape[1])
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
            std = min(0.02, fan_in**-0.5)
            v = torch.empty(shape).normal_(0.0, std, generator=generator)  # one pass, no temporary
        out[name] = v
    return out


def _unet_state(cfg: dict[str, Any], g: torch.Generator) -> dict[str, torch.Tensor]:
    from .unet import build_unet

    return _randomise(build_unet(cfg, meta=True), g)


def _vae_state_old_keys(cfg: dict[str, Any], g: torch.Generator) -> dict[str, torch.Tensor]:
    from .vae import build_vae

    with torch.device("meta"):
        net = build_vae(cfg)
    state = _randomise(net, g)
    back = {"to_q": "query", "to_k": "key", "to_v": "value"}
    old = {}
    for k, v in state.items():
        parts = k.split(".")
        if "attentions" in parts:
            if parts[-3:-1] == ["to_out", "0"]:
                parts = [*parts[:-3], "proj_attn", parts[-1]]
            elif parts[-2] in back:
                parts[-2] = back[parts[-2]]
        old[".".join(parts)] = v
    return old


def _whisper_encoder_state(dims: dict[str, int], g: torch.Generator) -> dict[str, torch.Tensor]:
    from .audio_features import WhisperEncoder

    enc = WhisperEncoder(dims["n_mels"], dims["n_audio_ctx"], dims["n_audio_state"],
                         dims["n_audio_head"], dims["n_audio_layer"])  # fmt: skip
    return _randomise(enc, g)


def _whisper_decoder_state(dims: dict[str, int], g: torch.Generator) -> dict[str, torch.Tensor]:
    """openai-whisper decoder keys (unused by MuseTalk; present in tiny.pt)."""
    d, v, ctx = dims["n_text_state"], dims["n_vocab"], dims["n_text_ctx"]
    s: dict[str, torch.Tensor] = {
        "decoder.token_embedding.weight": torch.randn(v, d, generator=g) * 0.02,
        "decoder.positional_embedding": torch.randn(ctx, d, generator=g) * 0.02,
        "decoder.ln.weight": torch.ones(d),
        "decoder.ln.bias": torch.zeros(d),
    }
    for i in range(dims["n_text_layer"]):
        p = f"decoder.blocks.{i}."
        for a in ("attn", "cross_attn"):
            for lin in ("query", "key", "value", "out"):
                s[f"{p}{a}.{lin}.weight"] = torch.randn(d, d, generator=g) * 0.02
                if lin != "key":
                    s[f"{p}{a}.{lin}.bias"] = torch.zeros(d)
            s[f"{p}{a}_ln.weight"] = torch.ones(d)
            s[f"{p}{a}_ln.bias"] = torch.zeros(d)
        s[f"{p}mlp.0.weight"] = torch.randn(4 * d, d, generator=g) * 0.02
        s[f"{p}mlp.0.bias"] = torch.zeros(4 * d)
        s[f"{p}mlp.2.weight"] = torch.randn(d, 4 * d, generator=g) * 0.02
        s[f"{p}mlp.2.bias"] = torch.zeros(d)
        s[f"{p}mlp_ln.weight"] = torch.ones(d)
        s[f"{p}mlp_ln.bias"] = torch.zeros(d)
    return s


def openai_to_hf_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`.audio_features.hf_to_openai_keys` (encoder), ``model.`` prefix."""
    rename = {new: old for old, new in HF_TO_OPENAI_BLOCK_KEYS.items()}
    out = {}
    for k, v in state.items():
        if k == "positional_embedding":
            nk = "embed_positions.weight"
        elif k.startswith("ln_post."):
            nk = "layer_norm." + k.removeprefix("ln_post.")
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            for old, new in rename.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            nk = f"layers.{i}.{rest}"
        else:
            nk = k
        out[f"model.encoder.{nk}"] = v
    return out


def _bisenet_states(g: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    from .blending import BiSeNet, ResNet18

    parsing = _randomise(BiSeNet(), g)
    backbone = _randomise(ResNet18(), g)
    backbone = {k: v for k, v in backbone.items() if not k.endswith("num_batches_tracked")}
    backbone["fc.weight"] = torch.randn(1000, 512, generator=g) * 0.02
    backbone["fc.bias"] = torch.zeros(1000)
    return parsing, backbone


def write_layout(
    models_dir: Path,
    version: str,
    *,
    size: str = "full",
    seed: int = 0,
    unet_from: Path | None = None,
    keep_shared: bool = False,
) -> list[Path]:
    """Write random weights for ``version`` under ``models_dir``; returns the files written.

    ``unet_from``: hard-link an already written UNet file of the same architecture instead of
    writing another 3.4 GB (v1.0 and v1.5 share it). ``keep_shared``: leave the files both
    versions use (VAE, face parsing) when they exist already (the other version wrote them).
    """
    models_dir = Path(models_dir)
    g = torch.Generator().manual_seed(seed)
    full = size == "full"
    unet_cfg = UNET_CONFIG if full else TINY_UNET
    vae_cfg = VAE_CONFIG if full else TINY_VAE
    dims = WHISPER_DIMS if full else TINY_WHISPER
    written: list[Path] = []

    def save(obj: Any, rel: str) -> None:
        p = models_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, dict) and all(isinstance(k, str) for k in obj) and rel.endswith(".json"):
            p.write_text(json.dumps(obj, indent=2))
        else:
            torch.save(obj, p)
        written.append(p)

    sub, wname = (
        ("musetalk", "pytorch_model.bin") if version == "v1" else ("musetalkV15", "unet.pth")
    )
    save(unet_cfg, f"{sub}/musetalk.json")
    target = models_dir / sub / wname
    if unet_from is not None and Path(unet_from).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        os.link(unet_from, target)
        written.append(target)
    else:
        save(_unet_state(unet_cfg, g), f"{sub}/{wname}")
    enc = _whisper_encoder_state(dims, g)
    if version == "v1":
        state = {f"encoder.{k}": v.half() for k, v in enc.items()}
        if full:
            state.update({k: v.half() for k, v in _whisper_decoder_state(dims, g).items()})
        save({"dims": dict(dims), "model_state_dict": state}, "whisper/tiny.pt")
    else:
        hf_cfg = {
            "architectures": ["WhisperForConditionalGeneration"],
            "model_type": "whisper",
            "d_model": dims["n_audio_state"],
            "encoder_attention_heads": dims["n_audio_head"],
            "encoder_layers": dims["n_audio_layer"],
            "decoder_layers": dims["n_text_layer"],
            "num_mel_bins": dims["n_mels"],
            "max_source_positions": dims["n_audio_ctx"],
            "max_target_positions": dims["n_text_ctx"],
            "vocab_size": dims["n_vocab"],
        }
        save(hf_cfg, "whisper/config.json")
        hf = openai_to_hf_keys(enc)
        hf["model.decoder.embed_tokens.weight"] = torch.randn(
            dims["n_vocab"], dims["n_text_state"], generator=g
        )
        hf["proj_out.weight"] = hf["model.decoder.embed_tokens.weight"]
        save(hf, "whisper/pytorch_model.bin")
        save({"feature_size": 80, "sampling_rate": 16000, "n_fft": 400, "hop_length": 160,
              "chunk_length": 30}, "whisper/preprocessor_config.json")  # fmt: skip
    shared = ("sd-vae-ft-mse/diffusion_pytorch_model.bin", "face-parse-bisent/79999_iter.pth",
              "face-parse-bisent/resnet18-5c106cde.pth", "sd-vae-ft-mse/config.json")  # fmt: skip
    if keep_shared and all((models_dir / rel).is_file() for rel in shared):
        return written
    save(vae_cfg, "sd-vae-ft-mse/config.json")
    save(_vae_state_old_keys(vae_cfg, g), "sd-vae-ft-mse/diffusion_pytorch_model.bin")
    parsing, backbone = _bisenet_states(g)
    save(parsing, "face-parse-bisent/79999_iter.pth")
    save(backbone, "face-parse-bisent/resnet18-5c106cde.pth")
    return written
