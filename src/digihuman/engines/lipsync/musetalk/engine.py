"""The MuseTalk lip-sync engine: official weights, normal and realtime modes, one code path.

``prepare`` (once per source, cached by the avatar store) computes for every source frame the
crop box, the VAE latents of the 256×256 crop (lower half blacked out ⊕ full) and the blend
mask. ``generate`` consumes audio chunks, computes whisper features on the audio known so far
(see :class:`~.audio_features.FeatureStream`, which holds a trailing window only, so the cost
of a batch does not grow with the segment), and for each batch of frames runs one UNet pass
and one VAE decode; pasting back runs on worker threads while the next batch computes.

Silence: a frame whose whole audio window (−80 ms … +120 ms) is below ``silence_db`` is
generated from a fixed "silent" audio window (the features of digital silence) instead of its
own, and the result is cached per source frame. The mouth then rests in the same closed pose
on every silent frame instead of twitching with whisper's response to noise and to the speech
around it. ``silence_db=None`` gives the official behaviour on every frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digihuman.engines.base import AudioStream, PreparedAvatar, Progress, no_progress
from digihuman.timing import frame_count, frame_start_sample
from digihuman.types import SAMPLE_RATE, AudioChunk, LipSyncCapabilities, SegmentEnd, VideoFrame

from .crop import Box, bbox_shift_range, crop_box

if TYPE_CHECKING:
    import torch

    from .audio_features import AudioFeatureExtractor, FeatureStream
    from .blending import FaceParser
    from .unet import MuseTalkUNet
    from .vae import MuseTalkVAE

log = logging.getLogger(__name__)

CROP = 256
WINDOW_BEFORE_S = 0.08  # the audio window reaches 80 ms before a frame's start
WINDOW_AFTER_S = 0.12  # … and 120 ms after it
LOOKAHEAD_MARGIN_S = 0.08  # the encoder's convolutions and STFT see a little further


def source_index(i: int, n: int) -> int:
    """MuseTalk's source cycle: frames forwards then backwards (``list + list[::-1]``)."""
    k = i % (2 * n)
    return k if k < n else 2 * n - 1 - k


@dataclass
class Components:
    """The four models, built (tests build tiny random ones; the engine loads the files)."""

    audio: AudioFeatureExtractor
    unet: MuseTalkUNet
    vae: MuseTalkVAE
    parser: FaceParser


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
             "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # fmt: skip
    if dtype not in table:
        from digihuman.errors import InputError

        raise InputError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    return table[dtype]


def load_components(
    models_dir: Path, version: str, *, device: str, dtype: torch.dtype
) -> Components:
    """Load every model of ``version`` strictly from the official layout under ``models_dir``."""
    from . import audio_features, blending, unet, vae
    from . import weights as W

    W.check_version(version)
    models_dir = Path(models_dir)
    sub = "musetalk" if version == "v1" else "musetalkV15"
    wname = "pytorch_model.bin" if version == "v1" else "unet.pth"
    # check presence of every file first, so the user hears about all of them at once
    missing = [
        f.path for f in W.files_for(version) if f.required and W.existing(models_dir, f) is None
    ]
    if missing:
        from digihuman.errors import MissingWeightsError

        raise MissingWeightsError(
            f"missing MuseTalk {version} weight file(s) under {models_dir}: {', '.join(missing)}; "
            f"{W.DOWNLOAD_HINT}"
        )
    cfg = W.require(models_dir, f"{sub}/musetalk.json")
    wfile = W.require(models_dir, f"{sub}/{wname}")
    t0 = time.perf_counter()
    net = unet.load_unet(cfg, wfile).to(device, dtype)
    v = vae.MuseTalkVAE(vae.load_vae(models_dir / "sd-vae-ft-mse"), device=device, dtype=dtype)
    a = audio_features.extractor_from_dir(models_dir, version, device=device, dtype=dtype)
    p = blending.FaceParser(blending.load_parser_net(models_dir / "face-parse-bisent"),
                            device=device)  # fmt: skip
    log.info("MuseTalk %s loaded in %.1fs on %s (%s)", version, time.perf_counter() - t0,
             device, dtype)  # fmt: skip
    return Components(audio=a, unet=net, vae=v, parser=p)


class MuseTalkEngine:
    """MuseTalk v1.0 / v1.5 behind the :class:`~digihuman.engines.base.LipSyncEngine` contract."""

    name = "musetalk"

    def __init__(
        self,
        models_dir: str | Path = "models",
        version: str = "v1",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        bbox_shift: int = 0,
        extra_margin: int = 10,
        parsing_mode: str = "jaw",
        compile: bool = False,
        seed: int = 0,
        face_index: int | None = None,
        *,
        fps: float = 25.0,
        silence_db: float | None = -60.0,
        blend_workers: int = 2,
        blur_ratio: float | None = None,
        components: Components | None = None,
    ) -> None:
        from . import weights as W

        W.check_version(version)
        self.models_dir = Path(models_dir)
        self.version = version
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = max(1, int(batch_size))
        self.bbox_shift = int(bbox_shift)
        self.extra_margin = int(extra_margin)
        # the v1.0 release blends through face-parsing labels 1-13 with a 1.2x crop box and a
        # 0.1 blur; v1.5 takes parsing_mode ("jaw") with 1.5x and 0.05 (its normal mode)
        self.parsing_mode = parsing_mode if version == "v15" else "v1"
        self.expand = 1.5 if version == "v15" else 1.2
        self.compile = bool(compile)
        self.seed = int(seed)
        self.face_index = face_index
        self.fps = float(fps)
        self.silence_db = silence_db
        self.blend_workers = max(1, int(blend_workers))
        self.blur_ratio = float(blur_ratio or (0.05 if version == "v15" else 0.1))
        if version == "v15" and self.bbox_shift:
            log.warning("bbox_shift is ignored by MuseTalk v1.5 (the official v1.5 uses 0)")
        lookahead = WINDOW_AFTER_S + LOOKAHEAD_MARGIN_S + (self.batch_size - 1) / self.fps
        self.capabilities = LipSyncCapabilities(
            fps=self.fps,
            needs_weights=True,
            device=self.device,
            streaming=True,
            lookahead_s=round(lookahead, 3),
            input_kinds=("image", "video", "images"),
        )
        self._components = components
        self._lock = threading.Lock()
        self._silent_window: np.ndarray | None = None
        self._silent_cache: dict[bytes, np.ndarray] = {}
        self.stats: dict[str, float] = {}
        self.profile = False
        self.reset_stats()

    # ------------------------------------------------------------------ models

    def load(self) -> Components:
        """Load the models now (otherwise on first use)."""
        with self._lock:
            if self._components is None:
                self._components = load_components(
                    self.models_dir, self.version, device=self.device, dtype=self.dtype
                )
                if self.compile and self.device.startswith("cuda"):
                    import torch

                    self._components.unet.unet = torch.compile(self._components.unet.unet)
            return self._components

    def settings_fingerprint(self) -> dict[str, Any]:
        return {
            "musetalk_version": self.version,
            "bbox_shift": self.bbox_shift if self.version == "v1" else 0,
            "extra_margin": self.extra_margin if self.version == "v15" else 0,
            "parsing_mode": self.parsing_mode,
            "blur_ratio": self.blur_ratio,
            "expand": self.expand,
            "seed": self.seed,
            "face_index": self.face_index,
        }

    def reset_stats(self) -> None:
        self.stats = {k: 0.0 for k in ("features", "unet", "decode", "blend", "frames")}
        self.stats["stream_bytes"] = 0.0  # audio + features the feature stream holds (a gauge)

    def _sync(self) -> None:
        """Per-stage timing on CUDA needs a synchronisation, which stalls the pipeline: only
        when ``profile`` is set (benchmarks); otherwise CUDA stage times are launch times."""
        if self.profile and self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    # ------------------------------------------------------------------ crop boxes

    def crop_boxes(
        self, frames: np.ndarray, *, fps: float = 25.0, progress: Progress = no_progress
    ) -> tuple[list[Box | None], tuple[int, int]]:
        """Per-frame crop boxes from the face module's landmarks, and the bbox_shift range."""
        from digihuman.face import FaceAnalyzer
        from digihuman.face.geometry import to_68

        lms = FaceAnalyzer().track(frames, self.face_index, progress, fps=fps)
        h = int(frames.shape[1])
        boxes: list[Box | None] = []
        pts = []
        for lm in lms:
            p68 = np.asarray(to_68(lm), np.float32)
            pts.append(p68)
            b = lm.box
            fallback = (int(b.x0), int(b.y0), int(b.x1), int(b.y1))
            boxes.append(
                crop_box(
                    p68,
                    self.bbox_shift,
                    fallback=fallback,
                    version=self.version,
                    extra_margin=self.extra_margin,
                    height=h,
                )
            )
        return boxes, bbox_shift_range(pts)

    # ------------------------------------------------------------------ prepare

    def prepare(
        self, frames: np.ndarray, fps: float, *, progress: Progress = no_progress
    ) -> PreparedAvatar:
        frames = np.asarray(frames)
        boxes, rng = self.crop_boxes(frames, fps=fps, progress=lambda f, m: progress(0.3 * f, m))
        prepared = self.prepare_boxes(
            frames, fps, boxes, progress=lambda f, m: progress(0.3 + 0.7 * f, m)
        )
        prepared.meta["bbox_shift_range"] = list(rng)
        return prepared

    def prepare_boxes(
        self,
        frames: np.ndarray,
        fps: float,
        boxes: Sequence[Box | None],
        *,
        progress: Progress = no_progress,
    ) -> PreparedAvatar:
        """Prepare from given crop boxes (None: no face in that frame, passed through)."""
        import cv2

        from .blending import blend_mask, crop_padded, expand_box

        c = self.load()
        frames = np.asarray(frames)
        n, h, w = frames.shape[:3]
        if len(boxes) != n:
            raise ValueError(f"{len(boxes)} boxes for {n} frames")
        valid = np.zeros(n, bool)
        box_arr = np.zeros((n, 4), np.int32)
        mask_boxes = np.zeros((n, 4), np.int32)
        for i, b in enumerate(boxes):
            if b is None:
                continue
            x0, y0, x1, y1 = (int(v) for v in b)
            x0, y0 = max(x0, 0), max(y0, 0)
            if x1 - x0 < 2 or y1 - y0 < 2 or x0 >= w or y0 >= h:
                continue
            valid[i] = True
            box_arr[i] = (x0, y0, x1, y1)
            mask_boxes[i] = expand_box((x0, y0, x1, y1), self.expand)
        latents = np.zeros((n, 2 * c.vae.latent_channels, CROP // 8, CROP // 8), np.float32)
        side = int((mask_boxes[:, 2] - mask_boxes[:, 0]).max()) if valid.any() else 1
        masks = np.zeros((n, side, side), np.uint8)
        idx = np.flatnonzero(valid)
        bs = max(self.batch_size, 8)
        for start in range(0, len(idx), bs):
            sel = idx[start : start + bs]
            crops = []
            for i in sel:
                x0, y0, x1, y1 = box_arr[i]
                crop = frames[i, y0:y1, x0:x1]
                crops.append(cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_LANCZOS4))
            lat = c.vae.latents_for_unet(np.stack(crops), [int(i) for i in sel], self.seed)
            latents[sel] = lat.cpu().numpy()
            larges = [crop_padded(frames[i], tuple(mask_boxes[i])) for i in sel]
            labels = c.parser.labels(larges)
            for k, i in enumerate(sel):
                m = blend_mask(labels[k], tuple(box_arr[i]), tuple(mask_boxes[i]),
                               mode=self.parsing_mode, blur_ratio=self.blur_ratio)  # fmt: skip
                masks[i, : m.shape[0], : m.shape[1]] = m
            progress(min(1.0, (start + len(sel)) / max(1, len(idx))), "latents and masks")
        if not valid.any():
            from digihuman.errors import NoFaceError

            raise NoFaceError("no usable face in any source frame; use a clearer portrait")
        return PreparedAvatar(
            engine=self.name,
            fps=float(fps),
            frames=frames,
            arrays={
                "boxes": box_arr,
                "valid": valid,
                "latents": latents,
                "mask_boxes": mask_boxes,
                "masks": masks,
            },
            meta={"engine": self.name, **self.settings_fingerprint()},
        )

    # ------------------------------------------------------------------ the per-frame step

    def run_batch(self, latents: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """(B, 8, 32, 32) latents + (B, 50, 384) audio windows → (B, 256, 256, 3) uint8 RGB."""
        return self._run_batch(latents, windows).cpu().numpy()

    def _run_batch(self, latents: np.ndarray, windows: np.ndarray) -> torch.Tensor:
        import torch

        c = self.load()
        b = latents.shape[0]
        pad = 0
        if self.device.startswith("cuda") and b < self.batch_size:
            pad = self.batch_size - b  # fixed shapes: no recompiles, graph-friendly
            latents = np.concatenate([latents, np.repeat(latents[-1:], pad, 0)])
            windows = np.concatenate([windows, np.repeat(windows[-1:], pad, 0)])
        t0 = time.perf_counter()
        with torch.inference_mode():
            lat = torch.from_numpy(np.ascontiguousarray(latents)).to(self.device, self.dtype)
            aud = torch.from_numpy(np.ascontiguousarray(windows)).to(self.device, self.dtype)
            pred = c.unet(lat, aud)
            self._sync()
            t1 = time.perf_counter()
            crops = c.vae.decode_tensor(pred)
            self._sync()
        t2 = time.perf_counter()
        self.stats["unet"] += t1 - t0
        self.stats["decode"] += t2 - t1
        return crops[:b]

    def step(self, crop: np.ndarray, window: np.ndarray, frame: int = 0) -> np.ndarray:
        """One frame: a 256×256 RGB crop + its (50, 384) audio window → the generated crop.

        ``frame`` seeds the VAE posterior sample (see :mod:`.vae`).
        """
        c = self.load()
        lat = c.vae.latents_for_unet(np.asarray(crop)[None], [frame], self.seed).cpu().numpy()
        return self.run_batch(lat, np.asarray(window, np.float32)[None])[0]

    def audio_windows(self, audio: np.ndarray, fps: float | None = None) -> np.ndarray:
        """wav (16 kHz mono float32) → (frame_count, 50, 384) per-frame windows."""
        c = self.load()
        fps = fps or self.fps
        feats = c.audio.features(np.asarray(audio, np.float32))
        n = frame_count(len(audio), SAMPLE_RATE, fps)
        return c.audio.windows(feats, range(n), fps)

    # ------------------------------------------------------------------ generate

    def _silent_features(self) -> np.ndarray:
        if self._silent_window is None:
            c = self.load()
            feats = c.audio.features(np.zeros(SAMPLE_RATE, np.float32))
            mid = int(self.fps // 2)
            self._silent_window = c.audio.windows(feats, [mid], self.fps)[0]
        return self._silent_window

    def _window_span(self, j: int) -> tuple[int, int]:
        """Segment samples ``[a, b)`` of frame ``j``'s audio window (−80 ms … +120 ms)."""
        start = frame_start_sample(j, SAMPLE_RATE, self.fps)
        a = max(0, start - int(WINDOW_BEFORE_S * SAMPLE_RATE))
        return a, start + int((1 / self.fps + WINDOW_AFTER_S) * SAMPLE_RATE)

    def _silent(self, stream: FeatureStream, j: int) -> bool:
        if self.silence_db is None:
            return False
        audio = stream.samples(*self._window_span(j))
        if not len(audio):
            return True
        peak = float(np.abs(audio).max())
        return peak <= 10 ** (self.silence_db / 20)

    def generate(
        self, prepared: PreparedAvatar, audio: AudioStream, *, start_frame: int = 0
    ) -> Iterator[VideoFrame]:
        from .audio_features import FeatureStream

        c = self.load()
        self._check_prepared(prepared)
        stream = FeatureStream(c.audio, self.fps)
        seg_next = 0  # next frame index within the current segment
        out_index = 0
        pool = ThreadPoolExecutor(self.blend_workers, thread_name_prefix="musetalk-blend")
        pending: deque[Future[VideoFrame]] = deque()
        keys: dict[int, bytes] = {}  # source frame → silent-cache key (hashed once per call)
        lookahead = round((WINDOW_AFTER_S + LOOKAHEAD_MARGIN_S) * SAMPLE_RATE)
        try:
            for item in audio:
                if isinstance(item, AudioChunk):
                    stream.push(self._to_16k(item))
                    ready = self._ready_frames(stream.n_samples, lookahead)
                    while ready - seg_next >= self.batch_size:
                        js = list(range(seg_next, seg_next + self.batch_size))
                        self._emit(
                            prepared,
                            stream,
                            js,
                            start_frame + out_index,
                            out_index,
                            pending,
                            pool,
                            keys,
                        )
                        seg_next += len(js)
                        out_index += len(js)
                        while len(pending) > self.batch_size:
                            yield pending.popleft().result()
                    # waiting for audio now: hand out what is computed (bounded latency)
                    while pending:
                        yield pending.popleft().result()
                elif isinstance(item, SegmentEnd):
                    total = frame_count(stream.n_samples, SAMPLE_RATE, self.fps)
                    while seg_next < total:
                        js = list(range(seg_next, min(total, seg_next + self.batch_size)))
                        self._emit(
                            prepared,
                            stream,
                            js,
                            start_frame + out_index,
                            out_index,
                            pending,
                            pool,
                            keys,
                        )
                        seg_next += len(js)
                        out_index += len(js)
                        while len(pending) > self.batch_size:
                            yield pending.popleft().result()
                    stream = FeatureStream(c.audio, self.fps)
                    seg_next = 0
            total = frame_count(stream.n_samples, SAMPLE_RATE, self.fps)  # no final SegmentEnd
            while seg_next < total:
                js = list(range(seg_next, min(total, seg_next + self.batch_size)))
                self._emit(
                    prepared, stream, js, start_frame + out_index, out_index, pending, pool, keys
                )
                seg_next += len(js)
                out_index += len(js)
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)

    def _ready_frames(self, n_samples: int, lookahead: int) -> int:
        """How many frames of the segment have all the audio their window needs."""
        # frame j is ready when frame_start_sample(j) + lookahead <= n_samples
        j = max(0, int((n_samples - lookahead) * self.fps / SAMPLE_RATE) + 1)
        while j > 0 and frame_start_sample(j - 1, SAMPLE_RATE, self.fps) + lookahead > n_samples:
            j -= 1
        return j

    @staticmethod
    def _to_16k(chunk: AudioChunk) -> np.ndarray:
        x = np.asarray(chunk.samples, np.float32).reshape(-1)
        if chunk.sample_rate == SAMPLE_RATE:
            return x
        from digihuman.media.audio import resample

        return resample(x, chunk.sample_rate, SAMPLE_RATE)

    def _check_prepared(self, prepared: PreparedAvatar) -> None:
        need = ("boxes", "valid", "latents", "mask_boxes", "masks")
        missing = [k for k in need if k not in prepared.arrays]
        if prepared.engine != self.name or missing:
            from digihuman.errors import InputError

            raise InputError(
                f"avatar was prepared for engine {prepared.engine!r} (missing {missing}); "
                "prepare it again with --engine musetalk"
            )

    @staticmethod
    def _silent_key(arrays: dict[str, np.ndarray], s: int) -> bytes:
        import hashlib

        lat = np.ascontiguousarray(arrays["latents"][s])
        return hashlib.blake2b(lat.tobytes(), digest_size=16).digest()

    def _emit(
        self,
        prepared: PreparedAvatar,
        stream: FeatureStream,
        js: list[int],
        cycle_start: int,
        out_start: int,
        pending: deque[Future[VideoFrame]],
        pool: ThreadPoolExecutor,
        keys: dict[int, bytes],
    ) -> None:
        """Generate segment frames ``js`` into ``pending`` (source cycle from ``cycle_start``).

        The stream then forgets everything before frame ``js[-1] + 1``'s window: a segment of
        any length holds a trailing window of audio and features only.
        """
        arr = prepared.arrays
        n_src = prepared.n_frames
        t0 = time.perf_counter()
        windows = stream.windows(js)
        self.stats["features"] += time.perf_counter() - t0
        srcs = [source_index(cycle_start + k, n_src) for k in range(len(js))]
        silent = [self._silent(stream, j) for j in js]
        stream.release(js[-1] + 1, keep_sample=self._window_span(js[-1] + 1)[0])
        self.stats["stream_bytes"] = float(stream.held_bytes)
        crops: list[Any] = [None] * len(js)
        todo = []
        for k, (s, quiet) in enumerate(zip(srcs, silent, strict=True)):
            if not bool(arr["valid"][s]):
                continue
            if quiet:
                if s not in keys:
                    keys[s] = self._silent_key(arr, s)
                cached = self._silent_cache.get(keys[s])
                if cached is not None:
                    crops[k] = cached
                    continue
                windows[k] = self._silent_features()
            todo.append(k)
        ready: Callable[[], None] = lambda: None  # noqa: E731 - replaced on CUDA
        if todo:
            lat = np.stack([np.asarray(arr["latents"][srcs[k]]) for k in todo])
            out = self._run_batch(lat, windows[todo])
            if out.device.type == "cuda":
                import torch

                host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
                host.copy_(out, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record()
                ready = ev.synchronize
                host_np = host.numpy()
            else:
                host_np = out.numpy()
            for t, k in enumerate(todo):
                crops[k] = host_np[t]
                if silent[k]:
                    ready()  # the copy must have landed before the cache keeps it
                    if len(self._silent_cache) >= 1024:
                        self._silent_cache.clear()
                    self._silent_cache[keys[srcs[k]]] = host_np[t].copy()
        for k in range(len(js)):
            job = (prepared, srcs[k], crops[k], out_start + k, not silent[k], ready)
            pending.append(pool.submit(self._blend, *job))
        self.stats["frames"] += len(js)

    def _blend(
        self,
        prepared: PreparedAvatar,
        s: int,
        crop: np.ndarray | None,
        index: int,
        speaking: bool,
        ready: Callable[[], None],
    ) -> VideoFrame:
        from .blending import paste, resize_face

        t0 = time.perf_counter()
        frame = np.asarray(prepared.frames[s])
        if crop is None:
            image = frame.copy()
        else:
            ready()
            arr = prepared.arrays
            box = tuple(int(v) for v in arr["boxes"][s])
            mbox = tuple(int(v) for v in arr["mask_boxes"][s])
            side_w, side_h = mbox[2] - mbox[0], mbox[3] - mbox[1]
            mask = np.asarray(arr["masks"][s][:side_h, :side_w])
            image = paste(frame, resize_face(np.asarray(crop), box), box, mask, mbox)  # type: ignore[arg-type]
        with self._lock:
            self.stats["blend"] += time.perf_counter() - t0
        return VideoFrame(image=image, index=index, fps=self.fps, speaking=speaking)
