"""MuseTalk engine on tiny random models in the official file layout (CPU, fast).

The reference computations here are written plainly from the official code's description
(diffusers forward passes, the window indices spelled out) and compared with the engine.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from digihuman.engines.base import whole_audio
from digihuman.engines.lipsync.musetalk import audio_features as AF
from digihuman.engines.lipsync.musetalk import blending as BL
from digihuman.engines.lipsync.musetalk import random_weights as RW
from digihuman.engines.lipsync.musetalk import weights as W
from digihuman.engines.lipsync.musetalk.crop import bbox_shift_range, crop_box
from digihuman.engines.lipsync.musetalk.engine import MuseTalkEngine, source_index
from digihuman.engines.lipsync.musetalk.vae import convert_vae_keys, frame_generator
from digihuman.errors import MissingWeightsError
from digihuman.timing import frame_count
from digihuman.types import AudioChunk, SegmentEnd, VideoFrame

BOX = (60, 50, 220, 260)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is fastest (and immune to a busy CI machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    RW.write_layout(d, "v1", size="tiny")
    RW.write_layout(d, "v15", size="tiny")
    return d


@pytest.fixture(scope="module")
def engines(tiny_dir: Path) -> dict[str, MuseTalkEngine]:
    return {v: MuseTalkEngine(models_dir=tiny_dir, version=v, batch_size=4) for v in ("v1", "v15")}


@pytest.fixture(scope="module")
def prepared(engines):
    """Each version's avatar of two random frames (prepared once: face parsing is the slow part)."""
    frames = _frames(2)
    return frames, {v: e.prepare_boxes(frames, 25.0, [BOX, BOX]) for v, e in engines.items()}


def _frames(n: int = 3, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 300, 280, 3)) * 255).astype(np.uint8)


def _speech(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)


# ------------------------------------------------------------------------------- audio windows


def _coded_features(t: int, layers: int = 5, dim: int = 3) -> np.ndarray:
    f = np.zeros((t, layers, dim), np.float32)
    f[:, :, 0] = np.arange(t)[:, None] + 1  # step id (+1 so that zero means "padding")
    f[:, :, 1] = np.arange(layers)[None, :]
    return f


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 120), frame=st.integers(0, 70))
def test_v1_window_is_ten_steps_around_2i_clamped(t: int, frame: int) -> None:
    win = AF.frame_windows(_coded_features(t), [frame], 25.0, "v1")[0]
    assert win.shape == (50, 3)
    steps = win[:, 0].reshape(10, 5) - 1
    layers = win[:, 1].reshape(10, 5)
    want = [min(max(2 * frame + k, 0), t - 1) for k in range(-4, 6)]
    assert (steps == np.array(want)[:, None]).all()  # step-major, all 5 layers of a step
    assert (layers == np.arange(5)[None, :]).all()


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 120), frame=st.integers(0, 70))
def test_v15_window_zero_pads_outside_the_clip(t: int, frame: int) -> None:
    win = AF.frame_windows(_coded_features(t), [frame], 25.0, "v15")[0]
    steps = win[:, 0].reshape(10, 5)
    for k in range(10):
        s = 2 * frame - 4 + k
        expect = s + 1 if 0 <= s < t else 0
        assert (steps[k] == expect).all()


def test_window_centre_follows_fps() -> None:
    assert list(AF.window_steps(3, 30.0, "v1")) == list(range(5 - 4, 5 + 6))  # int(3*50/30)=5
    assert list(AF.window_steps(10, 25.0, "v15")) == list(range(16, 26))
    # v1.5 at 24 fps pads ceil(50/24) * 2 = 6 steps on the left: steps idx-6 … idx+3
    assert list(AF.window_steps(12, 24.0, "v15")) == list(range(25 - 6, 25 + 4))
    for version in ("v1", "v15"):
        for fps in (5.0, 24.0, 25.0, 29.97, 30.0, 60.0):
            frames = list(range(0, 5000, 7))
            idx, _ = AF.window_index(frames, fps, version, 10**9)  # vectorised == per frame
            want = np.stack([AF.window_steps(f, fps, version) for f in frames])
            np.testing.assert_array_equal(idx, np.clip(want, 0, None) if version == "v1" else want)


def test_mel_filterbank_is_slaney_triangles() -> None:
    fb = AF.mel_filterbank()
    assert fb.shape == (80, 201) and fb.dtype == np.float32
    assert (fb >= 0).all() and (fb.max(axis=1) > 0).all()
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()
    # slaney area normalisation: filter height is 2 / (bandwidth in Hz)
    hz = AF._mel_to_hz(
        np.linspace(AF._hz_to_mel(np.array(0.0)), AF._hz_to_mel(np.array(8000.0)), 82)
    )
    assert np.allclose(fb.max(axis=1) <= 2 / (hz[2:] - hz[:-2]) + 1e-6, True)


def _plain_v1_features(enc: AF.WhisperEncoder, audio: np.ndarray) -> np.ndarray:
    """openai-whisper's log-mel over the whole clip, 3000-frame chunks padded with zeros."""
    x = torch.from_numpy(audio)
    stft = torch.stft(x, 400, 160, window=torch.hann_window(400), return_complex=True)
    mel = torch.from_numpy(AF.mel_filterbank()) @ (stft[:, :-1].abs() ** 2)
    log = torch.clamp(mel, min=1e-10).log10()
    log = (torch.maximum(log, log.max() - 8.0) + 4.0) / 4.0
    out = []
    for seek in range(0, log.shape[1], 3000):
        seg = log[:, seek : seek + 3000]
        steps = seg.shape[1] // 2
        seg = torch.nn.functional.pad(seg, (0, 3000 - seg.shape[1]))
        with torch.no_grad():
            h = torch.nn.functional.gelu(enc.conv1(seg[None]))
            h = torch.nn.functional.gelu(enc.conv2(h)).permute(0, 2, 1) + enc.positional_embedding
            hidden = [h]
            for b in enc.blocks:
                h = b(h)
                hidden.append(h)
        out.append(torch.stack(hidden, 2)[0, :steps].numpy())
    return np.concatenate(out)


def test_v1_features_match_a_plain_reference_across_a_chunk_boundary(engines) -> None:
    ex = engines["v1"].load().audio
    audio = _speech(31.0)
    feats = ex.features(audio)
    assert feats.shape == (1500 + 50, 3, 16)  # 3100 mel frames: 1500 + int(100 / 2) steps
    # (tiny whisper: the input embedding + 2 blocks; the full-size test has all 4)
    ref = _plain_v1_features(ex.encoder, audio)
    np.testing.assert_allclose(feats, ref, atol=1e-4)


def test_v15_features_per_segment_with_final_norm(engines) -> None:
    ex = engines["v15"].load().audio
    audio = _speech(1.3)
    feats = ex.features(audio)
    assert feats.shape == (math.floor(1.3 * 50), 3, 16)
    enc = ex.encoder
    seg = np.zeros(480000, np.float32)
    seg[: len(audio)] = audio
    x = torch.from_numpy(seg)
    stft = torch.stft(x, 400, 160, window=torch.hann_window(400), return_complex=True)
    mel = torch.from_numpy(AF.mel_filterbank()) @ (stft[:, :-1].abs() ** 2)
    log = torch.clamp(mel, min=1e-10).log10()
    log = (torch.maximum(log, log.max() - 8.0) + 4.0) / 4.0
    with torch.no_grad():
        h = torch.nn.functional.gelu(enc.conv1(log[None]))
        h = torch.nn.functional.gelu(enc.conv2(h)).permute(0, 2, 1) + enc.positional_embedding
        hidden = [h]
        for b in enc.blocks:
            h = b(h)
            hidden.append(h)
        hidden[-1] = enc.ln_post(hidden[-1])  # HF hidden_states: the last one is normalised
    ref = torch.stack(hidden, 2)[0, : feats.shape[0]].numpy()
    np.testing.assert_allclose(feats, ref, atol=1e-4)


def test_feature_stream_equals_whole_clip_when_complete(engines) -> None:
    ex = engines["v15"].load().audio
    audio = _speech(2.0)
    s = AF.FeatureStream(ex)
    for piece in np.array_split(audio, 7):
        s.push(piece)
        partial = s.features()
        assert partial.shape[0] == math.floor(s.n_samples / 16000 * 50)
    np.testing.assert_array_equal(s.features(), ex.features(audio))


class _WholeSegmentStream:
    """The non-windowed reference: the segment's whole audio kept, and on every call the
    features recomputed from all of it (chunks frozen once complete, as ``FeatureStream``'s
    contract says), the windows cut from the whole segment's features."""

    def __init__(self, ex: AF.AudioFeatureExtractor, fps: float = 25.0) -> None:
        self.ex, self.fps = ex, fps
        self.audio = np.zeros(0, np.float32)
        self.frozen: list[np.ndarray] = []
        self.cache: tuple[int, np.ndarray] | None = None

    @property
    def n_samples(self) -> int:
        return len(self.audio)

    @property
    def held_bytes(self) -> int:
        return self.audio.nbytes + sum(f.nbytes for f in self.frozen)

    def push(self, x: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, np.asarray(x, np.float32)])

    def features(self) -> np.ndarray:
        if self.cache is not None and self.cache[0] == len(self.audio):
            return self.cache[1]
        margin = 400 if self.ex.version == "v1" else 0
        complete = max(0, (len(self.audio) - margin) // 480_000)
        fresh = self.ex.chunk_features(self.audio, first_chunk=len(self.frozen))
        while len(self.frozen) < complete and fresh:
            self.frozen.append(fresh.pop(0))
        self.cache = (len(self.audio), np.concatenate(self.frozen + fresh))
        return self.cache[1]

    def windows(self, frames: list[int]) -> np.ndarray:
        return AF.frame_windows(self.features(), frames, self.fps, self.ex.version)

    def samples(self, a: int, b: int) -> np.ndarray:
        return self.audio[a:b]

    def release(self, frame: int, keep_sample: int | None = None) -> None:
        return None


@pytest.mark.parametrize("version", ["v1", "v15"])
def test_feature_stream_holds_a_trailing_window_and_gives_the_same_windows(
    engines, version: str
) -> None:
    """70 s in uneven pieces (two 30 s chunk boundaries): every window bit-equal to the
    whole-segment reference's, while the stream drops what no later frame needs."""
    ex = engines[version].load().audio
    audio = _speech(70.0)
    audio[560_000:] *= 1e-3  # quieter after 35 s, with a pause: v1.0's whole-clip log-mel
    audio[700_000:720_000] = 0.0  # floor (max - 8) then comes from the loud first chunk
    cuts = np.sort(np.random.default_rng(4).choice(len(audio), 13, replace=False))
    cuts = np.union1d(cuts, [480_000 - 100, 480_000 + 300, 960_000])  # pieces near boundaries
    s, ref = AF.FeatureStream(ex, 25.0), _WholeSegmentStream(ex, 25.0)
    nxt = 0
    held = []
    for piece in np.split(audio, cuts):
        s.push(piece)
        ref.push(piece)
        ready = frame_count(max(0, s.n_samples - 3200), 16000, 25.0)  # 200 ms lookahead
        if ready <= nxt:
            continue
        js = list(range(nxt, ready))
        np.testing.assert_array_equal(s.windows(js), ref.windows(js))
        a = max(0, nxt * 640 - 1280)
        np.testing.assert_array_equal(s.samples(a, a + 3200), ref.samples(a, a + 3200))
        s.release(ready)
        nxt = ready
        held.append(s.held_bytes)
    assert s.first_step > 0 and s.audio_start > 0  # the first chunk and its audio are gone
    assert max(held) < 0.75 * audio.nbytes  # never the whole segment's audio
    with pytest.raises(ValueError, match="released"):
        s.windows([nxt - 40])


# ------------------------------------------------------------------------------- weights


def _copy_layout(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_strict_loading_names_the_file(tiny_dir: Path, tmp_path: Path) -> None:
    from digihuman.engines.lipsync.musetalk import unet

    d = _copy_layout(tiny_dir, tmp_path / "m")
    wfile = d / "musetalk" / "pytorch_model.bin"
    cfg = d / "musetalk" / "musetalk.json"
    good = torch.load(wfile, weights_only=True)

    bad = dict(good)
    bad.pop("conv_in.weight")
    torch.save(bad, wfile)
    with pytest.raises(W.BadWeightsError, match=r"pytorch_model\.bin.*1 missing key.*conv_in"):
        unet.load_unet(cfg, wfile)

    bad = dict(good)
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, wfile)
    with pytest.raises(W.BadWeightsError, match=r"unexpected key.*extra\.weight"):
        unet.load_unet(cfg, wfile)

    bad = dict(good)
    bad["conv_in.weight"] = torch.zeros(3, 3)
    torch.save(bad, wfile)
    with pytest.raises(W.BadWeightsError, match=r"mis-shaped.*conv_in\.weight \(3, 3\)"):
        unet.load_unet(cfg, wfile)

    wfile.write_bytes(wfile.read_bytes()[:1000] if False else b"PK\x03\x04truncated")
    with pytest.raises(W.BadWeightsError, match=r"unreadable.*models download"):
        unet.load_unet(cfg, wfile)

    wfile.unlink()
    with pytest.raises(MissingWeightsError, match=r"musetalk/pytorch_model\.bin.*models download"):
        MuseTalkEngine(models_dir=d, version="v1").load()


def test_truncated_checkpoint_is_a_clear_error(tiny_dir: Path, tmp_path: Path) -> None:
    src = tiny_dir / "face-parse-bisent" / "79999_iter.pth"
    p = tmp_path / "face-parse-bisent" / "79999_iter.pth"
    p.parent.mkdir()
    data = src.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(W.BadWeightsError, match=r"79999_iter\.pth is unreadable"):
        W.load_checkpoint(p)


def test_old_vae_keys_convert_like_diffusers(tiny_dir: Path) -> None:
    from diffusers import AutoencoderKL

    from digihuman.engines.lipsync.musetalk import vae

    raw = torch.load(tiny_dir / "sd-vae-ft-mse" / "diffusion_pytorch_model.bin", weights_only=True)
    assert any(k.endswith("attentions.0.query.weight") for k in raw)
    conv = convert_vae_keys(raw)
    assert "encoder.mid_block.attentions.0.to_q.weight" in conv
    assert "decoder.mid_block.attentions.0.to_out.0.bias" in conv
    assert not any(".query." in k or "proj_attn" in k for k in conv)
    ours = vae.load_vae(tiny_dir / "sd-vae-ft-mse").state_dict()
    theirs = AutoencoderKL.from_pretrained(tiny_dir / "sd-vae-ft-mse").state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


def test_upstream_vae_folder_name_is_accepted(tiny_dir: Path, tmp_path: Path) -> None:
    d = _copy_layout(tiny_dir, tmp_path / "m")
    (d / "sd-vae-ft-mse").rename(d / "sd-vae")  # today's upstream download script's folder
    rows = {r.path: r for r in W.verify(d, ["v1"])}
    assert rows["sd-vae/diffusion_pytorch_model.bin"].ok


def test_verify_lists_every_file(tiny_dir: Path) -> None:
    rows = W.verify(tiny_dir)
    required = [r for r in rows if r.required]
    assert all(r.ok for r in required), [r for r in required if not r.ok]
    paths = {r.path for r in rows}
    assert "whisper/tiny.pt" in paths and "musetalkV15/unet.pth" in paths
    assert any(r.path.startswith("dwpose") and not r.required for r in rows)


def test_models_cli_verify_and_offline_download(
    tiny_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from digihuman.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["models", "verify", "--models-dir", str(tiny_dir)])
    assert res.exit_code == 0, res.output
    assert "musetalkV15/unet.pth" in res.output and " ok " in res.output

    d = _copy_layout(tiny_dir, tmp_path / "m")
    (d / "face-parse-bisent" / "79999_iter.pth").write_bytes(b"not a checkpoint")
    res = runner.invoke(app, ["models", "verify", "--models-dir", str(d), "--version", "v1"])
    assert res.exit_code == 1
    assert "BAD" in res.output and "79999_iter.pth" in res.output

    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    empty = tmp_path / "empty"
    import time

    t0 = time.monotonic()
    res = runner.invoke(app, ["models", "download", "--models-dir", str(empty), "--version", "v1"])
    assert time.monotonic() - t0 < 8
    assert res.exit_code != 0
    msg = str(res.exception) + res.output
    assert "offline" in msg and "whisper/tiny.pt" in msg and "openaipublic" in msg


# ------------------------------------------------------------------------------- crop box


def _lm68(cx: float = 140, cy: float = 150, s: float = 60) -> np.ndarray:
    rng = np.random.default_rng(3)
    pts = np.stack([cx + rng.uniform(-s, s, 68), cy + rng.uniform(-s * 0.6, s, 68)], 1)
    pts[28] = (cx, cy - 20)
    pts[29] = (cx, cy - 5)
    pts[30] = (cx, cy + 10)
    return pts.astype(np.float32)


def test_crop_box_official_rule() -> None:
    lm = _lm68()
    li = lm.astype(np.int32)
    x0, y0, x1, y1 = crop_box(lm)
    assert (x0, x1, y1) == (li[:, 0].min(), li[:, 0].max(), li[:, 1].max())
    assert y0 == max(0, li[29, 1] - (li[:, 1].max() - li[29, 1]))
    _, y0s, _, _ = crop_box(lm, bbox_shift=5)
    assert y0s == y0 + 10  # the centre moves down by 5 and the upper edge mirrors the chin
    lo, hi = bbox_shift_range([lm])
    assert (lo, hi) == (-(li[30, 1] - li[29, 1]), li[29, 1] - li[28, 1])


def test_crop_box_fallback_and_v15_margin() -> None:
    lm = _lm68(cx=20)  # some x < 0
    assert crop_box(lm, fallback=(1, 2, 3, 4)) == (1, 2, 3, 4)
    assert crop_box(lm) is None
    lm = _lm68()
    base = crop_box(lm)
    v15 = crop_box(lm, bbox_shift=30, version="v15", extra_margin=10, height=10_000)
    assert v15 == (base[0], base[1], base[2], base[3] + 10)  # bbox_shift ignored in v1.5
    v15 = crop_box(lm, version="v15", extra_margin=10, height=base[3] + 3)
    assert v15[3] == base[3] + 3


# ------------------------------------------------------------------------------- blending


def test_paste_equals_pil_paste_with_mask() -> None:
    from PIL import Image

    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
    box = (30, 40, 90, 110)
    cbox = BL.expand_box(box)
    face = rng.integers(0, 256, (box[3] - box[1], box[2] - box[0], 3), dtype=np.uint8)
    mask = rng.integers(0, 256, (cbox[3] - cbox[1], cbox[2] - cbox[0]), dtype=np.uint8)
    ours = BL.paste(frame, face, box, mask, cbox)
    body = Image.fromarray(frame)
    large = body.crop(cbox)
    large.paste(Image.fromarray(face), (box[0] - cbox[0], box[1] - cbox[1]))
    body.paste(large, cbox[:2], Image.fromarray(mask))
    np.testing.assert_array_equal(ours, np.asarray(body))


def test_jaw_kernel_and_masks() -> None:
    k = BL.jaw_kernel()
    assert k.shape == (33, 33) and k[:10].sum() == 0 and k[-1].sum() == k[20].sum()
    labels = np.zeros((512, 512), np.int64)
    labels[200:400, 150:350] = 1
    labels[300:330, 220:290] = 12
    labels[250:280, 240:260] = 10  # nose
    raw = BL.labels_to_mask(labels, "raw")
    jaw = BL.labels_to_mask(labels, "jaw")
    assert raw[210, 200] == 255 and raw[260, 250] == 0
    assert jaw[260, 250] == 0 and jaw[310, 250] == 255
    assert jaw[405:420, 250].any()  # dilated downwards below the skin (the jaw line)
    v1 = BL.labels_to_mask(labels, "v1")  # the v1.0 release: labels 1-13, nose included
    assert v1[260, 250] == 255 and v1[310, 250] == 255 and v1[100, 100] == 0
    m = BL.blend_mask(labels, (10, 10, 90, 90), BL.expand_box((10, 10, 90, 90)), mode="raw")
    assert m.shape == (120, 120) and m[:56].max() == 0  # upper half removed (blur: 3 px)


# ------------------------------------------------------------------------------- the engine


def _pe(d: int, n: int) -> torch.Tensor:
    pe = torch.zeros(n, d)
    pos = torch.arange(n, dtype=torch.float)[:, None]
    div = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def _reference_crop(eng: MuseTalkEngine, crop: np.ndarray, window: np.ndarray, frame: int):
    """diffusers forward passes, written plainly: masked/full latents → UNet(t=0) → decode.

    The image preprocessing step by step as the official ``VAE.preprocess_img`` (transpose to
    (C, 1, H, W), ``FloatTensor``, squeeze, the lower half multiplied by a 0/1 mask, normalise,
    unsqueeze), decoding ``(1 / scale) * latents`` as its ``decode_latents``.
    """
    c = eng.load()
    vae, unet = c.vae.vae, c.unet.unet
    half = torch.zeros(256, 256)
    half[:128] = 1

    def official_input(half_mask: bool) -> torch.Tensor:
        x = torch.squeeze(torch.FloatTensor(np.transpose(np.asarray([crop]) / 255.0, (3, 0, 1, 2))))
        if half_mask:
            x = x * (half > 0.5)
        return ((x - 0.5) / 0.5).unsqueeze(0)

    lats = []
    for which in (0, 1):
        dist = vae.encode(official_input(which == 0)).latent_dist
        lats.append(dist.sample(generator=[frame_generator(eng.seed, frame, which)]) * 0.18215)
    lat = torch.cat(lats, 1)
    cond = torch.from_numpy(window)[None] + _pe(window.shape[1], window.shape[0])[None]
    pred = unet(lat, torch.tensor([0]), encoder_hidden_states=cond).sample
    img = vae.decode((1 / 0.18215) * pred).sample
    img = ((img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) * 255).round().byte()[0].numpy()
    return lat, pred, img


@pytest.mark.parametrize("version", ["v1", "v15"])
def test_engine_matches_plain_reference(engines, prepared, version: str) -> None:
    eng = engines[version]
    frames, preps = prepared
    prep = preps[version]
    audio = _speech(0.5)
    out = list(eng.generate(prep, whole_audio(audio)))
    assert len(out) == frame_count(len(audio), 16000, 25.0) == 13
    assert [f.index for f in out] == list(range(13))
    feats = eng.load().audio.features(audio)
    d = feats.shape[2]
    with torch.no_grad():
        for i in (0, 1, 6, 12):
            # the window, plainly: 10 steps 2i-4 … 2i+5, clamped (v1) or zero (v1.5)
            rows = []
            for s in range(2 * i - 4, 2 * i + 6):
                if version == "v1":
                    rows.append(feats[min(max(s, 0), len(feats) - 1)])
                else:
                    rows.append(feats[s] if 0 <= s < len(feats) else np.zeros((3, d), np.float32))
            window = np.concatenate(rows).reshape(-1, d)
            src = source_index(i, 2)  # 0 1 1 0 0 1 ...
            x0, y0, x1, y1 = BOX
            crop = cv2.resize(frames[src, y0:y1, x0:x1], (256, 256),
                              interpolation=cv2.INTER_LANCZOS4)  # fmt: skip
            lat, pred, ref_img = _reference_crop(eng, crop, window, src)
            # contiguous VAE input: equal up to the batch's rounding (prepared two at a time)
            np.testing.assert_allclose(prep.arrays["latents"][src], lat[0].numpy(), atol=1e-6)
            got_pred = eng.load().unet(lat, torch.from_numpy(window)[None])
            np.testing.assert_allclose(got_pred.numpy(), pred.numpy(), atol=1e-4)
            got = eng.run_batch(lat.numpy(), window[None])[0]
            np.testing.assert_array_equal(got, ref_img)  # decoded as the official: (1/s) * z
            # the composite: the reference crop pasted through the prepared mask
            face = cv2.resize(ref_img, (x1 - x0, y1 - y0))
            mb = tuple(prep.arrays["mask_boxes"][src])
            side = mb[2] - mb[0]
            ref_frame = BL.paste(
                frames[src], face, BOX, prep.arrays["masks"][src][:side, :side], mb
            )
            assert np.abs(out[i].image.astype(int) - ref_frame.astype(int)).max() <= 1


def test_version_blending_parameters(engines, prepared) -> None:
    v1, v15 = engines["v1"], engines["v15"]
    assert (v1.parsing_mode, v1.expand, v1.blur_ratio) == ("v1", 1.2, 0.1)
    assert (v15.parsing_mode, v15.expand, v15.blur_ratio) == ("jaw", 1.5, 0.05)
    assert tuple(prepared[1]["v1"].arrays["mask_boxes"][0]) == BL.expand_box(BOX, 1.2)
    assert tuple(prepared[1]["v15"].arrays["mask_boxes"][0]) == BL.expand_box(BOX, 1.5)


def test_step_is_the_per_frame_function(engines) -> None:
    eng = engines["v1"]
    crop = _frames(1)[0, :256, :256]
    window = np.random.default_rng(2).standard_normal((30, 16)).astype(np.float32)
    _, _, ref = _reference_crop(eng, crop, window, 7)
    got = eng.step(crop, window, frame=7)
    assert got.shape == (256, 256, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref)  # one frame: bit-equal latents, the same decode


def test_batch_size_does_not_change_output(engines, prepared) -> None:
    frames, preps = prepared
    audio = _speech(0.4)
    a = engines["v1"]
    b = MuseTalkEngine(version="v1", batch_size=1, components=a.load())
    pa = preps["v1"]
    # latents: one frame at a time == the batched preparation (per-frame seeded samples)
    x0, y0, x1, y1 = BOX
    crop = cv2.resize(frames[1, y0:y1, x0:x1], (256, 256), interpolation=cv2.INTER_LANCZOS4)
    one = b.load().vae.latents_for_unet(crop[None], [1], b.seed).numpy()[0]
    np.testing.assert_allclose(pa.arrays["latents"][1], one, atol=1e-5)
    fa = [f.image for f in a.generate(pa, whole_audio(audio))]
    fb = [f.image for f in b.generate(pa, whole_audio(audio))]
    assert len(fa) == len(fb) == 10
    assert (
        max(np.abs(x.astype(int) - y.astype(int)).max() for x, y in zip(fa, fb, strict=True)) <= 1
    )


def test_streaming_yields_early_and_counts_frames(light, prepared) -> None:
    eng = MuseTalkEngine(version="v15", batch_size=4, components=light["v15"])
    prep = prepared[1]["v15"]
    audio = _speech(1.0)
    consumed = []

    def chunks():
        for k, piece in enumerate(np.array_split(audio, 20)):  # 50 ms chunks
            consumed.append(k)
            yield AudioChunk(piece)
        yield SegmentEnd()
        consumed.append("end")

    first_at = None
    n = 0
    for f in eng.generate(prep, chunks(), start_frame=5):
        if first_at is None:
            first_at = len(consumed)
        assert f.index == n
        n += 1
    assert n == 25
    assert first_at is not None and first_at < 20  # before the audio ended
    # two segments in one call: frame_count of each, indices counting on
    two = [AudioChunk(audio[:3200]), SegmentEnd(), AudioChunk(audio[:4000]), SegmentEnd()]
    assert [f.index for f in eng.generate(prep, two)] == list(range(5 + 6))
    # the latency bound: frame 0 needed at most lookahead_s of audio past its start
    assert (first_at * 0.05) <= eng.capabilities.lookahead_s + 0.05 + 1e-9


def test_silence_rests_the_mouth(engines, prepared) -> None:
    eng = engines["v1"]
    prep = prepared[1]["v1"]
    audio = np.concatenate([_speech(0.3), np.zeros(12000, np.float32), _speech(0.3)])
    out = list(eng.generate(prep, whole_audio(audio)))
    quiet = [f for f in out if not f.speaking]
    assert 10 <= len(quiet) <= 19  # 0.75 s of silence, less the windows reaching into speech
    for src in (0, 1):  # the same source frame always gives the same silent image
        same = [f.image for f in quiet if source_index(f.index, 2) == src]
        assert len(same) >= 4 and all(np.array_equal(same[0], x) for x in same)
    assert all(f.speaking for f in out[:5])
    loud = [f.image for f in out if f.speaking]
    assert not all(np.array_equal(loud[0], x) for x in loud[1:])


def test_unprepared_avatar_is_refused(engines) -> None:
    from digihuman.engines.base import PreparedAvatar
    from digihuman.errors import InputError

    bad = PreparedAvatar(engine="lite", fps=25.0, frames=_frames(1))
    with pytest.raises(InputError, match="--engine musetalk"):
        list(engines["v1"].generate(bad, whole_audio(_speech(0.1))))


def test_download_url_resumes_a_partial_file(tmp_path: Path) -> None:
    import http.server
    import threading

    payload = np.random.default_rng(9).bytes(300_000)
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            seen.append(rng)
            start = int(rng.split("=")[1].rstrip("-")) if rng else 0
            body = payload[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "face-parse-bisent" / "resnet18-5c106cde.pth"
        dest.parent.mkdir()
        (dest.parent / (dest.name + ".part")).write_bytes(payload[:123_456])
        progress: list[int] = []
        W.download_url(f"http://127.0.0.1:{srv.server_address[1]}/f", dest,
                       report=lambda name, done, total: progress.append(done))  # fmt: skip
        assert dest.read_bytes() == payload
        assert seen == ["bytes=123456-"] and progress[-1] == len(payload)
        assert not (dest.parent / (dest.name + ".part")).exists()
        W.record_checksum(tmp_path, "face-parse-bisent/resnet18-5c106cde.pth",
                          W.sha256_of(dest), len(payload), "test")  # fmt: skip
        assert W.read_manifest(tmp_path)["files"]["face-parse-bisent/resnet18-5c106cde.pth"][
            "size"
        ] == len(payload)
    finally:
        srv.shutdown()


# ------------------------------------------------------------------------------- long segments


def _held_bytes(obj: object, seen: set[object] | None = None) -> int:
    """Bytes of the numpy buffers reachable from ``obj`` through containers and attributes
    (a view counts its whole base: that is what it keeps alive)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        root = obj
        while isinstance(root.base, np.ndarray):
            root = root.base
        if isinstance(root.base, torch.Tensor):  # torch.Tensor.numpy(): the tensor's storage
            key, size = root.base.untyped_storage().data_ptr(), root.base.untyped_storage().nbytes()
        else:
            key, size = id(root), root.nbytes
        if ("buffer", key) in seen:
            return 0
        seen.add(("buffer", key))
        return int(size)
    if isinstance(obj, dict):
        return sum(_held_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)) or type(obj).__name__ == "deque":
        return sum(_held_bytes(v, seen) for v in obj)
    if isinstance(obj, AF.FeatureStream):
        return _held_bytes({k: v for k, v in vars(obj).items() if k != "extractor"}, seen)
    return 0


@pytest.fixture()
def recorded_streams(monkeypatch) -> list[AF.FeatureStream]:
    """Every ``FeatureStream`` the engine makes, kept for the test to measure."""
    made: list[AF.FeatureStream] = []

    class Recorded(AF.FeatureStream):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(AF, "FeatureStream", Recorded)
    return made


@pytest.fixture(scope="module")
def light(engines):
    """Each version's tiny components with a one-layer whisper (long segments stay cheap)."""
    from digihuman.engines.lipsync.musetalk.engine import Components

    out = {}
    for version, eng in engines.items():
        base = eng.load()
        torch.manual_seed(0)
        enc = AF.WhisperEncoder(n_state=16, n_head=1, n_layer=1, norm_last=version == "v15")
        audio = AF.AudioFeatureExtractor(enc, version=version)
        out[version] = Components(audio=audio, unet=base.unet, vae=base.vae, parser=base.parser)
    return out


@pytest.fixture(scope="module")
def small(engines):
    """Each version's avatar of two 48×48 frames (cheap to paste, many frames a second)."""
    frames = (np.random.default_rng(6).random((2, 48, 48, 3)) * 255).astype(np.uint8)
    box = (8, 6, 40, 44)
    return {v: e.prepare_boxes(frames, 25.0, [box, box]) for v, e in engines.items()}


def test_realtime_hour_holds_bounded_buffers_at_a_flat_cost(light, small, recorded_streams) -> None:
    """One hour in 20 s chunks (realtime mode: frames come out as their audio is known).

    Kept cheap: a one-layer whisper (the tiny UNet/VAE/parser), 5 fps, 48×48 frames, speech
    in the first chunk only and then noise below ``silence_db`` (real audio for the features;
    the frames come from the per-source silent cache, so every later chunk costs the same
    work: its features, its windows, its frames). What is
    measured: the bytes of audio and features the engine's stream holds after every chunk
    (bounded, not growing with the segment: before the trailing window it held the whole
    segment's audio and features, 1.4 GB for an hour of full-size whisper) and the main
    thread's CPU time per chunk, late against early (was: every batch re-concatenated and, for
    v1.0, re-ran the STFT over the whole segment).
    """
    eng = MuseTalkEngine(version="v1", fps=5.0, batch_size=8, components=light["v1"])
    prep = small["v1"]
    chunk_s, n_chunks = 20, 180  # one hour
    rng = np.random.default_rng(8)
    noise = (rng.uniform(-1, 1, chunk_s * 16000) * 9e-4).astype(np.float32)  # below -60 dBFS
    first = noise.copy()
    first[:16000] = _speech(1.0)
    cpu: list[float] = []
    held: list[int] = []

    def chunks():
        import time

        for k in range(n_chunks):
            t0 = time.thread_time()
            yield AudioChunk(first if k == 0 else noise)
            cpu.append(time.thread_time() - t0)  # this chunk's batches, features included
            held.append(_held_bytes(recorded_streams))
            assert held[-1] < 8 * 2**20, f"{held[-1] / 2**20:.1f} MiB held after {k + 1} chunks"
        yield SegmentEnd()

    speaking = [f.index for f in eng.generate(prep, chunks()) if f.speaking]
    assert eng.stats["frames"] == frame_count(n_chunks * len(noise), 16000, 5.0) == 18_000
    assert speaking == list(range(6))  # the first second's frames (and the one after it)
    assert len(recorded_streams) >= 1 and len(held) == n_chunks
    early, late = np.median(cpu[3:12]), np.median(cpu[-9:])  # 9 chunks: 3 whole 60 s cycles
    assert late < 2.0 * early, (early, late)
    assert max(held[-30:]) <= 1.5 * max(held[3:30])  # flat, not merely under the bound


@pytest.mark.parametrize("version", ["v1", "v15"])
def test_realtime_output_equals_the_whole_segment_computation(
    light, small, version: str, monkeypatch
) -> None:
    """34 s streamed in uneven chunks, speech across the 30 s chunk boundary: the frames are
    bit-equal to those of the same engine reading its windows from the whole segment (the
    stream-level test above goes across two boundaries)."""
    audio = np.zeros(34 * 16000, np.float32)
    for t0, t1 in ((0.0, 0.2), (29.9, 30.1)):
        a, b = int(t0 * 16000), int(t1 * 16000)
        audio[a:b] = _speech(1.0, seed=a)[: b - a]
    cuts = np.union1d(
        np.sort(np.random.default_rng(7).choice(len(audio), 5, replace=False)),
        [480_000 - 50, 480_000 + 250],
    )

    def render() -> list[VideoFrame]:
        eng = MuseTalkEngine(version=version, batch_size=4, components=light[version])
        prep = small[version]
        pieces = [AudioChunk(p) for p in np.split(audio, cuts)]
        return list(eng.generate(prep, [*pieces, SegmentEnd()]))

    windowed = render()
    monkeypatch.setattr(AF, "FeatureStream", _WholeSegmentStream)
    whole = render()
    assert len(windowed) == len(whole) == frame_count(len(audio), 16000, 25.0)
    differ = [i for i, (x, y) in enumerate(zip(windowed, whole, strict=True))
              if not np.array_equal(x.image, y.image) or x.speaking != y.speaking]  # fmt: skip
    assert differ == []
    speaking = [f.index for f in whole if f.speaking]
    assert {0, 750} <= set(speaking) and len(speaking) < 30  # at the start, at the boundary
