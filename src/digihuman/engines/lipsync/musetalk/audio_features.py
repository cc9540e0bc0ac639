"""Audio features for MuseTalk: the whisper-tiny encoder and the per-frame windows.

The official computation (MuseTalk ``musetalk/whisper/audio2feature.py`` for v1.0,
``musetalk/utils/audio_processor.py`` for v1.5), re-written:

* log-mel spectrogram as in openai-whisper (16 kHz, n_fft 400, hop 160, 80 slaney mel bands,
  ``log10``, floor at ``max - 8``, ``(x + 4) / 4``), fed to the encoder 3000 mel frames (30 s)
  at a time;
* features = the encoder's input embedding plus the output of each of its blocks: for
  whisper-tiny 5 × 384 per step, 50 steps per second. v1.0 (openai ``tiny.pt``) takes the
  block outputs as they are; v1.5 (Hugging Face ``WhisperModel``, ``output_hidden_states``)
  has the final layer norm applied to the last one;
* v1.0 normalises the log-mel over the whole clip and pads each 30 s chunk with zeros *in the
  normalised mel domain*; v1.5 cuts the waveform into 30 s segments, pads each with silence and
  normalises per segment. Both keep ``int(mel_frames / 2)`` (v1.0) or ``floor(seconds * 50)``
  (v1.5) steps;
* video frame ``i`` at ``fps`` takes 10 steps ``c - 4 … c + 5`` around ``c = int(i * 50 / fps)``
  (−80 ms … +120 ms at 25 fps), flattened step-major to ``(10 * 5) × 384 = 50 × 384``. Out of
  range steps are clamped to the ends (v1.0) or zero (v1.5, whose official code zero-pads).

Nothing here needs transformers: the encoder is a small module with openai-whisper's key names;
the v1.5 Hugging Face folder is loaded by renaming its encoder keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digihuman.engines.lipsync.musetalk import weights as W

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # 480000
CHUNK_FRAMES = CHUNK_SAMPLES // HOP  # 3000 mel frames
STEPS_PER_SECOND = 50
WINDOW_LEFT = 4  # steps before the centre step (2 frames × 2 steps)
WINDOW_RIGHT = 6  # steps from the centre step on (exclusive end: c + 5 is the last)
WINDOW_STEPS = WINDOW_LEFT + WINDOW_RIGHT  # 10
SAMPLES_PER_STEP = SAMPLE_RATE // STEPS_PER_SECOND  # 320
TAIL_MARGIN = 3 * HOP  # v1.0: audio kept before a chunk so its first STFT frame is exact


# ---------------------------------------------------------------------------------------------
# log-mel spectrogram
# ---------------------------------------------------------------------------------------------


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return np.where(
        f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels
    )


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 triangular filters, slaney scale and area norm.

    The filters openai-whisper ships as ``mel_filters.npz`` (``librosa.filters.mel`` defaults).
    """
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sr / 2)),
                                     n_mels + 2))  # fmt: skip
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2:] - mel_pts[:-2]))[:, None]
    return weights.astype(np.float32)


def mel_power(audio: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """(80, n // 160) mel power spectrum (centred STFT with reflect padding, last frame dropped)."""
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)
    magnitudes = stft[:, :-1].abs() ** 2
    return filters @ magnitudes


def log_normalise(mel: torch.Tensor) -> torch.Tensor:
    """whisper's log-mel normalisation, relative to the maximum of ``mel``."""
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


# ---------------------------------------------------------------------------------------------
# the encoder (openai-whisper key names)
# ---------------------------------------------------------------------------------------------


class _LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # computed in float32, as whisper does
        return super().forward(x.float()).type(x.dtype)


class _SelfAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.n_head

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, c // h).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class _Block(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = _SelfAttention(n_state, n_head)
        self.attn_ln = _LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(),
                                 nn.Linear(4 * n_state, n_state))  # fmt: skip
        self.mlp_ln = _LayerNorm(n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class WhisperEncoder(nn.Module):
    """whisper's audio encoder; ``forward`` returns the stacked hidden states MuseTalk uses."""

    positional_embedding: torch.Tensor

    def __init__(
        self,
        n_mels: int = 80,
        n_ctx: int = 1500,
        n_state: int = 384,
        n_head: int = 6,
        n_layer: int = 4,
        *,
        norm_last: bool = False,
    ) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.n_state = n_state
        self.norm_last = norm_last  # v1.5 (HF hidden_states): final layer norm on the last one
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList([_Block(n_state, n_head) for _ in range(n_layer)])
        self.ln_post = _LayerNorm(n_state)

    @property
    def n_layers_out(self) -> int:
        return len(self.blocks) + 1

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, 2 * n_ctx) → (B, n_ctx, n_layer + 1, n_state)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        if x.shape[1:] != self.positional_embedding.shape:
            raise ValueError(f"encoder expects {2 * self.n_ctx} mel frames, got {mel.shape[-1]}")
        x = (x + self.positional_embedding).to(x.dtype)
        hidden = [x]
        for block in self.blocks:
            x = block(x)
            hidden.append(x)
        if self.norm_last:
            hidden[-1] = self.ln_post(hidden[-1])
        return torch.stack(hidden, dim=2)


HF_TO_OPENAI_BLOCK_KEYS = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
"""Per-block key names: Hugging Face Whisper encoder layer → openai-whisper residual block."""


def hf_to_openai_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face Whisper checkpoint's encoder keys to openai-whisper's names.

    Decoder keys (``decoder.*``, ``proj_out.*``) are dropped: MuseTalk uses only the encoder.
    """
    out: dict[str, torch.Tensor] = {}
    rename = HF_TO_OPENAI_BLOCK_KEYS
    for key, value in state.items():
        k = key.removeprefix("model.")
        if not k.startswith("encoder."):
            continue
        k = k.removeprefix("encoder.")
        if k == "embed_positions.weight":
            k = "positional_embedding"
        elif k.startswith("layer_norm."):
            k = "ln_post." + k.removeprefix("layer_norm.")
        elif k.startswith("layers."):
            _, idx, rest = k.split(".", 2)
            for old, new in rename.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            k = f"blocks.{idx}.{rest}"
        out[k] = value
    return out


def load_encoder(path: Path, *, version: str) -> WhisperEncoder:
    """Load whisper-tiny strictly: ``whisper/tiny.pt`` (openai) or the HF ``whisper/`` folder."""
    path = Path(path)
    if path.is_dir():
        cfg = W.read_json(path / "config.json")
        try:
            dims = dict(
                n_mels=int(cfg["num_mel_bins"]),
                n_ctx=int(cfg["max_source_positions"]),
                n_state=int(cfg["d_model"]),
                n_head=int(cfg["encoder_attention_heads"]),
                n_layer=int(cfg["encoder_layers"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise W.BadWeightsError(
                f"{path / 'config.json'} lacks {exc}; {W.DOWNLOAD_HINT}"
            ) from None
        wfile = W.require(path.parent, "whisper/pytorch_model.bin")
        state = hf_to_openai_keys(W.state_dict_of(W.load_checkpoint(wfile), wfile))
    else:
        wfile = path
        ckpt = W.load_checkpoint(path)
        if not isinstance(ckpt, dict) or "dims" not in ckpt:
            raise W.BadWeightsError(f"{path} is not an openai-whisper checkpoint (no 'dims')")
        d = ckpt["dims"]
        try:
            dims = dict(
                n_mels=int(d["n_mels"]),
                n_ctx=int(d["n_audio_ctx"]),
                n_state=int(d["n_audio_state"]),
                n_head=int(d["n_audio_head"]),
                n_layer=int(d["n_audio_layer"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise W.BadWeightsError(f"{path}: 'dims' lacks {exc}") from None
        full = W.state_dict_of(ckpt, path, key="model_state_dict")
        state = {k[len("encoder.") :]: v for k, v in full.items() if k.startswith("encoder.")}
        extra = [k for k in full if not k.startswith(("encoder.", "decoder."))]
        if extra:
            raise W.BadWeightsError(f"{path}: unexpected key(s) {extra[:3]}; {W.DOWNLOAD_HINT}")
    enc = WhisperEncoder(**dims, norm_last=(version == "v15"))
    W.load_strict(enc, state, wfile, what="whisper encoder")
    return enc.float().eval()


def verify_file(path: Path) -> str:
    enc = load_encoder(path, version="v15" if Path(path).is_dir() else "v1")
    n = sum(p.numel() for p in enc.parameters())
    return f"whisper encoder: {len(enc.blocks)} blocks × {enc.n_state}, {n / 1e6:.1f}M params"


def describe_hf_config(folder: Path) -> str:
    cfg = W.read_json(Path(folder) / "config.json")
    return f"d_model {cfg.get('d_model')}, encoder_layers {cfg.get('encoder_layers')}"


# ---------------------------------------------------------------------------------------------
# features and windows
# ---------------------------------------------------------------------------------------------


class AudioFeatureExtractor:
    """wav (16 kHz mono float32) → per-step features (T, n_layer + 1, d) → per-frame windows."""

    def __init__(
        self,
        encoder: WhisperEncoder,
        *,
        version: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        W.check_version(version)
        self.version = version
        self.device = torch.device(device)
        self.dtype = dtype
        self.encoder = encoder.to(self.device, dtype).eval()
        self.filters = torch.from_numpy(mel_filterbank()).to(self.device)
        self.n_layers_out = encoder.n_layers_out
        self.dim = encoder.n_state

    @torch.inference_mode()
    def encode(self, mel: torch.Tensor) -> np.ndarray:
        """(B, 80, 3000) normalised log-mel → (B, 1500, n_layer + 1, d) float32 numpy."""
        out = self.encoder(mel.to(self.device, self.dtype))
        return out.float().cpu().numpy()

    def chunk_features(self, audio: np.ndarray, first_chunk: int = 0) -> list[np.ndarray]:
        """Features of the 30 s chunks ``first_chunk, …`` of ``audio``, trimmed as officially.

        v1.0 normalises the log-mel over the whole of ``audio`` (so the result depends on all of
        it); v1.5 treats each 30 s segment on its own.
        """
        return self.tail_chunks(audio, first_chunk)[0]

    def tail_chunks(
        self,
        tail: np.ndarray,
        first_chunk: int = 0,
        *,
        origin: int = 0,
        log_max: float | None = None,
    ) -> tuple[list[np.ndarray], list[float]]:
        """Features of chunks ``first_chunk, …`` from the clip's tail; each chunk's log-mel max.

        ``tail`` holds the clip's samples from sample ``origin`` to its end. For v1.0,
        ``origin`` must be 0 or a multiple of the hop at least :data:`TAIL_MARGIN` samples before
        the first chunk: the chunks' mel frames then come from exactly the samples the whole
        clip gives them, bit for bit, and ``log_max`` (the maximum ``log10`` mel of at least
        every frame before the first chunk) stands in for the audio before ``origin`` in the
        whole-clip normalisation. v1.5 needs ``origin <= first_chunk * CHUNK_SAMPLES`` only.
        The second list: per chunk, the maximum ``log10`` mel over its frames (v1.0; what a
        later call's ``log_max`` takes).
        """
        n = origin + len(tail)
        if origin > first_chunk * CHUNK_SAMPLES:
            raise ValueError(f"a tail from sample {origin} has no chunk {first_chunk}")
        x = torch.from_numpy(np.ascontiguousarray(tail, dtype=np.float32)).to(self.device)
        mels: list[torch.Tensor] = []
        keep: list[int] = []
        maxima: list[float] = []
        if self.version == "v1":
            if origin % HOP or 0 < first_chunk * CHUNK_SAMPLES - origin < TAIL_MARGIN:
                raise ValueError(f"v1.0 tail origin {origin} is not hop-aligned with a margin")
            if len(tail) < HOP:
                return [], []
            log_spec = torch.clamp(mel_power(x, self.filters), min=1e-10).log10()
            m = int(log_spec.shape[1])
            skip = first_chunk * CHUNK_FRAMES - origin // HOP  # local index of the first chunk
            exact = 0 if origin == 0 else -(-(N_FFT // 2) // HOP)  # no reflect padding from here
            top = log_spec[:, exact:].max() if m > exact else None
            if log_max is not None:
                prior = torch.tensor(log_max, dtype=log_spec.dtype, device=log_spec.device)
                top = prior if top is None else torch.maximum(top, prior)
            if top is None:
                return [], []
            mel = (torch.maximum(log_spec, top - 8.0) + 4.0) / 4.0
            for seek in range(skip, m, CHUNK_FRAMES):
                seg = mel[:, seek : seek + CHUNK_FRAMES]
                keep.append(int(seg.shape[1]) // 2)
                maxima.append(float(log_spec[:, seek : seek + CHUNK_FRAMES].max()))
                mels.append(F.pad(seg, (0, CHUNK_FRAMES - int(seg.shape[1]))))
        else:
            total = math.floor(n / SAMPLE_RATE * STEPS_PER_SECOND)
            steps = CHUNK_FRAMES // 2
            k = first_chunk
            while k * CHUNK_SAMPLES < n:
                seg = x[k * CHUNK_SAMPLES - origin : (k + 1) * CHUNK_SAMPLES - origin]
                seg = F.pad(seg, (0, CHUNK_SAMPLES - int(seg.shape[0])))
                mels.append(log_normalise(mel_power(seg, self.filters)))
                keep.append(max(0, min(steps, total - k * steps)))
                maxima.append(0.0)  # unused: each v1.5 segment is normalised on its own
                k += 1
        if not mels:
            return [], []
        feats = self.encode(torch.stack(mels))
        return [f[:k] for f, k in zip(feats, keep, strict=True)], maxima

    def features(self, audio: np.ndarray) -> np.ndarray:
        """The whole clip's features, (T, n_layer + 1, d) float32, as the official code computes."""
        chunks = self.chunk_features(audio)
        if not chunks:
            return np.zeros((0, self.n_layers_out, self.dim), np.float32)
        return np.concatenate(chunks, axis=0)

    def windows(self, features: np.ndarray, frames: Sequence[int], fps: float) -> np.ndarray:
        return frame_windows(features, frames, fps, self.version)


def window_steps(frame: int, fps: float, version: str) -> np.ndarray:
    """The 10 raw step indices (maybe out of range) of video frame ``frame``'s audio window."""
    if version == "v1":
        centre = int(frame * STEPS_PER_SECOND / fps)
        return centre + np.arange(-WINDOW_LEFT, WINDOW_RIGHT)
    # v1.5 uses an integer fps in its multiplier and pads 2 * ceil(50 / fps) zero steps on the
    # left (4 at 25 fps and above, 6 at 24 fps) before taking 10 steps from the frame's index
    mult = STEPS_PER_SECOND / int(fps)
    left = 2 * math.ceil(mult)
    return math.floor(frame * mult) + np.arange(-left, WINDOW_STEPS - left)


def window_index(
    frames: Sequence[int], fps: float, version: str, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """The step indices (len(frames), 10) of each frame's window in a clip of ``total`` steps
    and a mask of the ones that exist: clamped to the ends (v1.0), outside ones masked (v1.5).
    """
    fr = np.asarray(frames, np.int64).reshape(-1)  # window_steps, for all frames at once
    if version == "v1":
        first = (fr * STEPS_PER_SECOND / fps).astype(np.int64) - WINDOW_LEFT
    else:
        mult = STEPS_PER_SECOND / int(fps)
        first = np.floor(fr * mult).astype(np.int64) - 2 * math.ceil(mult)
    idx = first[:, None] + np.arange(WINDOW_STEPS)[None, :]
    if version == "v1":
        idx = np.clip(idx, 0, max(0, total - 1))
        ok = np.full(idx.shape, total > 0)
    else:
        ok = (idx >= 0) & (idx < total)
    return idx, ok


def frame_windows(
    features: np.ndarray, frames: Sequence[int], fps: float, version: str
) -> np.ndarray:
    """(len(frames), 10 * (n_layer + 1), d) float32: each frame's window, step-major.

    Out-of-range steps are clamped to the first/last step (v1.0) or zero (v1.5).
    """
    t, layers, dim = features.shape
    idx, ok = window_index(frames, fps, version, t)
    out = np.zeros((len(frames), WINDOW_STEPS, layers, dim), np.float32)
    out[ok] = features[idx[ok]]
    return out.reshape(len(frames), WINDOW_STEPS * layers, dim)


class FeatureStream:
    """Features of a growing audio segment (realtime mode), in bounded memory.

    Each time new audio has arrived, only the chunks not yet final are encoded: a 30 s chunk is
    frozen once all of its audio is known (v1.5: exact; v1.0: its log-mel floor then stops
    following the running maximum of later audio, a documented approximation of the whole-clip
    normalisation). When a whole clip arrives at once the result equals
    :meth:`AudioFeatureExtractor.features` exactly.

    Only a trailing window is held, so a segment of any length costs the same per batch and the
    same memory: the audio from the first chunk not yet frozen (v1.0: :data:`TAIL_MARGIN`
    earlier, so its STFT frames are exact; the frozen chunks' log-mel maximum is kept as one
    number), the frozen chunks' features while a frame still to come needs them, and whatever
    the consumer said it still reads. The consumer asks for frames in increasing order and calls
    :meth:`release` with the first frame it will still ask for; nothing before it is kept.
    """

    def __init__(self, extractor: AudioFeatureExtractor, fps: float = 25.0) -> None:
        self.extractor = extractor
        self.fps = float(fps)
        self._parts: list[np.ndarray] = []  # audio from sample self._audio_start on
        self._audio_start = 0
        self._n = 0
        self._frozen: list[np.ndarray] = []  # chunks self._frozen_first … of the frozen ones
        self._frozen_first = 0
        self._log_max: float | None = None  # v1.0: log10 mel maximum over the frozen chunks
        self._fresh: tuple[int, list[np.ndarray]] | None = None  # (n_samples, chunks)
        self._keep_step = 0  # steps before this are not asked for any more
        self._keep_sample = 0  # … nor samples before this

    @property
    def n_samples(self) -> int:
        return self._n

    @property
    def n_frozen(self) -> int:
        return self._frozen_first + len(self._frozen)

    @property
    def first_step(self) -> int:
        """The first step :meth:`features` holds."""
        return self._frozen_first * (CHUNK_FRAMES // 2)

    @property
    def audio_start(self) -> int:
        """The first sample :meth:`samples` can still give."""
        return self._audio_start

    @property
    def held_bytes(self) -> int:
        """Bytes of audio and features held now (the fresh chunks counted once per chunk)."""
        fresh = self._fresh[1] if self._fresh else []
        return sum(int(a.nbytes) for a in (*self._parts, *self._frozen, *fresh))

    def push(self, samples: np.ndarray) -> None:
        if len(samples):
            self._parts.append(np.asarray(samples, np.float32).reshape(-1))
            self._n += len(samples)

    def _audio(self) -> np.ndarray:
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.zeros(0, np.float32)

    def samples(self, start: int, stop: int) -> np.ndarray:
        """The segment's samples ``[start, stop)`` (clipped to what has arrived)."""
        if start < self._audio_start:
            raise ValueError(f"samples from {start} were released (held from {self._audio_start})")
        audio = self._audio()
        return audio[start - self._audio_start : max(start, stop) - self._audio_start]

    def audio(self) -> np.ndarray:
        """The held audio, from sample :attr:`audio_start` on."""
        return self._audio()

    def _update(self) -> list[np.ndarray]:
        if self._fresh is not None and self._fresh[0] == self._n:
            return self._fresh[1]
        ex = self.extractor
        first = self.n_frozen
        origin = 0
        if first:
            origin = first * CHUNK_SAMPLES - (TAIL_MARGIN if ex.version == "v1" else 0)
        audio = self._audio()
        tail = audio[origin - self._audio_start :]
        fresh, maxima = ex.tail_chunks(tail, first, origin=origin, log_max=self._log_max)
        margin = N_FFT if ex.version == "v1" else 0
        complete = max(0, (self._n - margin) // CHUNK_SAMPLES)
        while self.n_frozen < complete and fresh:
            self._frozen.append(fresh.pop(0).copy())  # not a view of the encoder's batch
            top = maxima.pop(0)
            self._log_max = top if self._log_max is None else max(self._log_max, top)
        self._fresh = (self._n, fresh)
        self._trim()
        return fresh

    def _parts_with_steps(self) -> list[tuple[int, np.ndarray]]:
        steps = CHUNK_FRAMES // 2
        fresh = self._update()
        parts = [*self._frozen, *fresh]
        return [(self.first_step + k * steps, p) for k, p in enumerate(parts)]

    def features(self) -> np.ndarray:
        """The held features, (T, n_layer + 1, d) from step :attr:`first_step` on."""
        parts = [p for _, p in self._parts_with_steps()]
        ex = self.extractor
        if not parts:
            return np.zeros((0, ex.n_layers_out, ex.dim), np.float32)
        return np.concatenate(parts, axis=0)

    def windows(self, frames: Sequence[int]) -> np.ndarray:
        """The windows of segment frames ``frames`` (none of them released), as
        :func:`frame_windows` gives them from the whole segment's features."""
        ex = self.extractor
        parts = self._parts_with_steps()
        total = sum(len(p) for _, p in parts) + self.first_step
        idx, ok = window_index(frames, self.fps, ex.version, total)
        if (ok & (idx < self._keep_step)).any():
            raise ValueError(f"frames {list(frames)} need released steps (< {self._keep_step})")
        out = np.zeros((len(frames), WINDOW_STEPS, ex.n_layers_out, ex.dim), np.float32)
        for first, part in parts:
            sel = ok & (idx >= first) & (idx < first + len(part))
            out[sel] = part[idx[sel] - first]
        return out.reshape(len(frames), WINDOW_STEPS * ex.n_layers_out, ex.dim)

    def release(self, frame: int, keep_sample: int | None = None) -> None:
        """Frames before ``frame`` will not be asked for again, nor samples before
        ``keep_sample`` (default: the first sample of ``frame``'s window)."""
        first = int(window_steps(int(frame), self.fps, self.extractor.version)[0])
        self._keep_step = max(self._keep_step, first, 0)
        if keep_sample is None:
            keep_sample = first * SAMPLES_PER_STEP
        self._keep_sample = max(self._keep_sample, int(keep_sample), 0)
        self._trim()

    def _trim(self) -> None:
        steps = CHUNK_FRAMES // 2
        while self._frozen and (self._frozen_first + 1) * steps <= self._keep_step:
            self._frozen.pop(0)
            self._frozen_first += 1
        # audio: what the next encoding needs, and what the consumer still reads
        need = self.n_frozen * CHUNK_SAMPLES
        if self.extractor.version == "v1" and self.n_frozen:
            need -= TAIL_MARGIN
        cut = min(need, self._keep_sample, self._n)
        while self._parts and self._audio_start + len(self._parts[0]) <= cut:
            self._audio_start += len(self._parts.pop(0))
        if self._parts and self._audio_start < cut:
            self._parts[0] = self._parts[0][cut - self._audio_start :]
            self._audio_start = cut


def extractor_from_dir(
    models_dir: Path, version: str, *, device: str | torch.device, dtype: torch.dtype
) -> AudioFeatureExtractor:
    if version == "v1":
        path = W.require(models_dir, "whisper/tiny.pt")
    else:
        W.require(models_dir, "whisper/config.json")
        path = Path(models_dir) / "whisper"
    return AudioFeatureExtractor(
        load_encoder(path, version=version), version=version, device=device, dtype=dtype
    )


def describe(extractor: AudioFeatureExtractor) -> dict[str, Any]:
    return {"version": extractor.version, "layers": extractor.n_layers_out, "dim": extractor.dim}
