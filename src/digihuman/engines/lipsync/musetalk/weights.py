"""MuseTalk weight files: the official layout, strict loading, download and verification.

The layout under ``models_dir`` is the one the official MuseTalk repository documents, so a
user's existing ``./models/`` folder loads unchanged::

    musetalk/musetalk.json, musetalk/pytorch_model.bin        UNet v1.0
    musetalkV15/musetalk.json, musetalkV15/unet.pth           UNet v1.5
    whisper/tiny.pt                                           whisper-tiny (openai format, v1.0)
    whisper/config.json + pytorch_model.bin|model.safetensors whisper-tiny (HF format, v1.5)
    sd-vae-ft-mse/config.json, diffusion_pytorch_model.bin    the VAE
    face-parse-bisent/79999_iter.pth, resnet18-5c106cde.pth   BiSeNet face parsing
    dwpose/dw-ll_ucoco_384.pth                                optional (unused: our face module
                                                              gives the 68 landmarks)

Loading is strict: every key of the model must be in the file with the right shape and the file
may hold no other key (the documented exceptions: the whisper decoder in the HF folder, the
classifier ``fc.*`` of the ImageNet ResNet-18 and BatchNorm ``num_batches_tracked`` counters,
which the computation never reads). A wrong or truncated file is a :class:`BadWeightsError`
naming the file, never random weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digihuman.errors import MissingWeightsError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

VERSIONS = ("v1", "v15")
MANIFEST = "manifest.json"
DOWNLOAD_HINT = "run 'digihuman models download' (or copy the official MuseTalk ./models/ folder)"


class BadWeightsError(MissingWeightsError):
    """A weight file exists but is unreadable, truncated or of the wrong architecture."""


@dataclass(frozen=True)
class WeightFile:
    """One file of the official layout and where it comes from."""

    path: str  # relative to models_dir
    component: str  # unet | unet-config | whisper | vae | vae-config | parsing | backbone | dwpose
    versions: tuple[str, ...]
    source: str  # "hf:<repo>:<filename>" or an https URL
    required: bool = True
    sha256: str | None = None  # a published checksum, when one is known
    alternatives: tuple[str, ...] = ()  # other accepted file names in the same folder


_HF_MUSETALK = "TMElyralab/MuseTalk"
# openai-whisper's published URL; the path segment is the file's SHA-256.
_TINY_SHA = "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9"
TINY_URL = f"https://openaipublic.azureedge.net/main/whisper/models/{_TINY_SHA}/tiny.pt"
RESNET18_URL = "https://download.pytorch.org/models/resnet18-5c106cde.pth"
# MuseTalk's download script fetches 79999_iter.pth from this Google Drive file with gdown.
PARSING_DRIVE_ID = "154JgKpzCPW82qINcVieuPH3fZ2e0P812"
PARSING_URL = (
    f"https://drive.usercontent.google.com/download?id={PARSING_DRIVE_ID}&export=download&confirm=t"
)

FILES: tuple[WeightFile, ...] = (
    WeightFile("musetalk/musetalk.json", "unet-config", ("v1",),
               f"hf:{_HF_MUSETALK}:musetalk/musetalk.json"),
    WeightFile("musetalk/pytorch_model.bin", "unet", ("v1",),
               f"hf:{_HF_MUSETALK}:musetalk/pytorch_model.bin"),
    WeightFile("musetalkV15/musetalk.json", "unet-config", ("v15",),
               f"hf:{_HF_MUSETALK}:musetalkV15/musetalk.json"),
    WeightFile("musetalkV15/unet.pth", "unet", ("v15",),
               f"hf:{_HF_MUSETALK}:musetalkV15/unet.pth"),
    WeightFile("whisper/tiny.pt", "whisper", ("v1",), TINY_URL, sha256=_TINY_SHA),
    WeightFile("whisper/config.json", "whisper-config", ("v15",),
               "hf:openai/whisper-tiny:config.json"),
    WeightFile("whisper/pytorch_model.bin", "whisper", ("v15",),
               "hf:openai/whisper-tiny:pytorch_model.bin", alternatives=("model.safetensors",)),
    WeightFile("whisper/preprocessor_config.json", "whisper-config", ("v15",),
               "hf:openai/whisper-tiny:preprocessor_config.json", required=False),
    WeightFile("sd-vae-ft-mse/config.json", "vae-config", VERSIONS,
               "hf:stabilityai/sd-vae-ft-mse:config.json"),
    WeightFile("sd-vae-ft-mse/diffusion_pytorch_model.bin", "vae", VERSIONS,
               "hf:stabilityai/sd-vae-ft-mse:diffusion_pytorch_model.bin",
               alternatives=("diffusion_pytorch_model.safetensors",)),
    WeightFile("face-parse-bisent/79999_iter.pth", "parsing", VERSIONS, PARSING_URL),
    WeightFile("face-parse-bisent/resnet18-5c106cde.pth", "backbone", VERSIONS, RESNET18_URL),
    WeightFile("dwpose/dw-ll_ucoco_384.pth", "dwpose", VERSIONS,
               "hf:yzd-v/DWPose:dw-ll_ucoco_384.pth", required=False),
)  # fmt: skip


def files_for(version: str) -> list[WeightFile]:
    check_version(version)
    return [f for f in FILES if version in f.versions]


def check_version(version: str) -> None:
    if version not in VERSIONS:
        from digihuman.errors import InputError

        raise InputError(f"unknown MuseTalk version {version!r}; use one of: {', '.join(VERSIONS)}")


# Folder names other layouts use for the same files (today's upstream download script puts the
# VAE in ``models/sd-vae/``).
FOLDER_ALIASES = {"sd-vae-ft-mse": ("sd-vae",)}


def existing(models_dir: Path, wf: WeightFile) -> Path | None:
    """The file on disk for ``wf`` (or an accepted alternative name or folder), if present."""
    folder, _, name = wf.path.partition("/")
    for f in (folder, *FOLDER_ALIASES.get(folder, ())):
        for n in (name, *wf.alternatives):
            q = Path(models_dir) / f / n
            if q.is_file():
                return q
    return None


def require(models_dir: Path, rel: str) -> Path:
    """The path of a required file of the layout, or a MissingWeightsError saying how to get it."""
    wf = next(f for f in FILES if f.path == rel)
    p = existing(models_dir, wf)
    if p is None:
        raise MissingWeightsError(
            f"missing MuseTalk weight file {Path(models_dir) / wf.path} "
            f"(from {describe_source(wf.source)}); {DOWNLOAD_HINT}"
        )
    return p


def describe_source(source: str) -> str:
    if source.startswith("hf:"):
        _, repo, name = source.split(":", 2)
        return f"https://huggingface.co/{repo}/blob/main/{name}"
    return source


# ---------------------------------------------------------------------------------------------
# reading and strict loading
# ---------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BadWeightsError(f"{path} is not valid JSON ({exc}); {DOWNLOAD_HINT}") from None
    if not isinstance(data, dict):
        raise BadWeightsError(f"{path} is not a JSON object; {DOWNLOAD_HINT}")
    return data


def load_checkpoint(path: Path) -> Any:
    """Read a PyTorch (.bin/.pth/.pt) or safetensors file on the CPU, safely (no pickled code).

    Zip-format checkpoints are memory-mapped, so a 3.4 GB UNet is not copied into RAM twice.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            # legacy (pre-1.6, non-zip) format, e.g. torchvision's resnet18-5c106cde.pth
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MissingWeightsError(f"missing weight file {path}; {DOWNLOAD_HINT}") from None
    except Exception as exc:  # truncated zip, pickle errors, wrong format: all say the same
        raise BadWeightsError(
            f"{path} is unreadable ({type(exc).__name__}: {str(exc)[:160]}) - truncated or not "
            f"a PyTorch checkpoint; delete it and {DOWNLOAD_HINT}"
        ) from None


def state_dict_of(obj: Any, path: Path, *, key: str | None = None) -> dict[str, torch.Tensor]:
    import torch

    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise BadWeightsError(f"{path} has no {key!r} entry; {DOWNLOAD_HINT}")
        obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadWeightsError(f"{path} does not hold a state dict of tensors; {DOWNLOAD_HINT}")
    return dict(obj)


def load_strict(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path | str,
    *,
    what: str,
    ignore: Callable[[str], bool] = lambda k: False,
    assign: bool = False,
) -> None:
    """Load ``state`` into ``module``; any missing, extra or mis-shaped key is an error.

    ``ignore(key)`` names keys that may be absent from the file or extra in it (documented
    per caller). ``assign=True`` adopts the file's tensors (for models built on the meta device).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not ignore(k)]
    extra = [k for k in state if k not in own and not ignore(k)]
    shaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or shaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} unexpected key(s) (e.g. {', '.join(extra[:3])})")
        if shaped:
            parts.append(f"{len(shaped)} mis-shaped tensor(s) (e.g. {'; '.join(shaped[:3])})")
        raise BadWeightsError(
            f"{path} does not match the {what} architecture: {', '.join(parts)}; "
            f"check the file (and its config) or {DOWNLOAD_HINT}"
        )
    present = {k: v for k, v in state.items() if k in own}
    module.load_state_dict(present, strict=False, assign=assign)


def ignore_bn_counters(key: str) -> bool:
    """BatchNorm ``num_batches_tracked`` counters: unused at inference, absent from old files."""
    return key.endswith("num_batches_tracked")


# ---------------------------------------------------------------------------------------------
# checksums, manifest
# ---------------------------------------------------------------------------------------------


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def read_manifest(models_dir: Path) -> dict[str, Any]:
    p = Path(models_dir) / MANIFEST
    if not p.is_file():
        return {"files": {}}
    try:
        data = json.loads(p.read_text())
    except ValueError:
        return {"files": {}}
    data.setdefault("files", {})
    return data


def record_checksum(models_dir: Path, rel: str, digest: str, size: int, source: str) -> None:
    data = read_manifest(models_dir)
    data["files"][rel] = {"sha256": digest, "size": size, "source": source}
    p = Path(models_dir) / MANIFEST
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, p)


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------

Reporter = Callable[[str, int, int | None], None]
"""``report(file, bytes_done, bytes_total)`` during a download."""


def _no_report(name: str, done: int, total: int | None) -> None:
    return None


def download_url(
    url: str, dest: Path, *, timeout: float = 10.0, report: Reporter = _no_report
) -> None:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run."""
    import urllib.error
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "digihuman"})
    if done:
        req.add_header("Range", f"bytes={done}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:  # already complete
            os.replace(part, dest)
            return
        raise
    with resp:
        if done and resp.status != 206:  # the server ignored Range: start again
            done = 0
        length = resp.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("text/html"):
            raise OSError(f"{url} answered with a web page, not the file (quota or login page)")
        with open(part, "ab" if done else "wb") as f:
            while True:
                b = resp.read(1 << 20)
                if not b:
                    break
                f.write(b)
                done += len(b)
                report(dest.name, done, total)
    if total is not None and done != total:
        raise OSError(f"{url}: got {done} of {total} bytes; run the command again to resume")
    os.replace(part, dest)


def download_hf(repo: str, filename: str, dest: Path, *, timeout: float = 10.0) -> None:
    """Fetch one file from the Hugging Face Hub into ``dest`` (resumable, with a progress bar)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        from digihuman.errors import missing_extra

        raise missing_extra("huggingface_hub", "musetalk") from None
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout)))
    # local_dir: the file lands at local_dir/filename (repo sub-folders kept); partial
    # downloads are resumed from local_dir/.cache.
    local_dir = dest.parent
    sub = Path(filename).parent
    if str(sub) != ".":
        for _ in sub.parts:
            local_dir = local_dir.parent
    got = Path(hf_hub_download(repo_id=repo, filename=filename, local_dir=str(local_dir)))
    if got.resolve() != dest.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, dest)


def hf_sha256(repo: str, filename: str, *, timeout: float = 10.0) -> str | None:
    """The SHA-256 the Hub publishes for an LFS file (its ETag), or None for small files."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url(repo, filename), timeout=timeout)
    etag = (meta.etag or "").strip('"')
    return etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None


def check_online(timeout: float = 5.0) -> str | None:
    """None when the Hub answers; else a one-line reason (so offline fails fast)."""
    import socket
    import urllib.parse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urllib.parse.urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot reach {host} ({exc.__class__.__name__}: {exc})"


def download(
    models_dir: Path,
    version: str,
    *,
    include_optional: bool = False,
    timeout: float = 10.0,
    report: Reporter = _no_report,
    on_file: Callable[[WeightFile, str], None] = lambda wf, state: None,
) -> list[tuple[WeightFile, str]]:
    """Fetch the files of ``version`` that are missing; record and check SHA-256 checksums.

    Returns ``(file, state)`` rows: state is ``present``, ``downloaded`` or ``failed: ...``.
    Offline, it fails fast with a :class:`MissingWeightsError` listing where each file goes.
    """
    models_dir = Path(models_dir)
    wanted = [f for f in files_for(version) if f.required or include_optional]
    todo = [f for f in wanted if existing(models_dir, f) is None]
    rows: list[tuple[WeightFile, str]] = [(f, "present") for f in wanted if f not in todo]
    if not todo:
        return rows
    reason = check_online(timeout=min(timeout, 5.0))
    if reason is not None:
        lines = "; ".join(f"{models_dir / f.path} <- {describe_source(f.source)}" for f in todo)
        raise MissingWeightsError(f"offline: {reason}. Put these files in place by hand: {lines}")
    models_dir.mkdir(parents=True, exist_ok=True)
    for wf in todo:
        dest = models_dir / wf.path
        on_file(wf, "start")
        t0 = time.monotonic()
        try:
            want = wf.sha256
            if wf.source.startswith("hf:"):
                _, repo, name = wf.source.split(":", 2)
                download_hf(repo, name, dest, timeout=timeout)
                want = want or hf_sha256(repo, name, timeout=timeout)
            else:
                download_url(wf.source, dest, timeout=timeout, report=report)
            digest = sha256_of(dest)
            if want is not None and digest != want:
                bad = dest.with_name(dest.name + ".bad")
                os.replace(dest, bad)
                raise OSError(f"checksum mismatch (got {digest[:12]}, want {want[:12]})")
            record_checksum(models_dir, wf.path, digest, dest.stat().st_size, wf.source)
            rows.append((wf, "downloaded"))
            log.info("downloaded %s in %.1fs", wf.path, time.monotonic() - t0)
            on_file(wf, "done")
        except Exception as exc:
            rows.append((wf, f"failed: {type(exc).__name__}: {str(exc)[:200]}"))
            on_file(wf, "failed")
    return rows


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyRow:
    path: str
    version: str
    ok: bool
    detail: str
    required: bool = True


def _describe_unet_config(path: Path) -> str:
    from digihuman.engines.lipsync.musetalk import unet

    return unet.describe_config(read_json(path))


def verify(models_dir: Path, versions: Iterable[str] = VERSIONS) -> list[VerifyRow]:
    """Check every file of each version: present, checksum (when recorded), loads strictly.

    Loading builds each component exactly as the engine does (config → model → strict load),
    so a file that verifies is a file the engine accepts.
    """
    from digihuman.engines.lipsync.musetalk import audio_features, blending, unet, vae

    models_dir = Path(models_dir)
    manifest = read_manifest(models_dir)["files"]
    rows: list[VerifyRow] = []
    seen: set[str] = set()

    def check(rel: str, version: str, fn: Callable[[], str], required: bool = True) -> None:
        key = f"{rel}"
        if key in seen:
            return
        seen.add(key)
        wf = next(f for f in FILES if f.path == rel)
        p = existing(models_dir, wf)
        if p is None:
            rows.append(VerifyRow(rel, version, False, "missing", required))
            return
        rec = manifest.get(wf.path)
        try:
            if rec is not None and rec.get("sha256") and sha256_of(p) != rec["sha256"]:
                raise BadWeightsError(f"{p}: SHA-256 differs from the one recorded at download")
            detail = fn()
            rows.append(VerifyRow(str(p.relative_to(models_dir)), version, True, detail, required))
        except Exception as exc:
            rows.append(VerifyRow(rel, version, False, str(exc)[:300], required))

    for version in versions:
        if version == "v1":
            cfg, w = "musetalk/musetalk.json", "musetalk/pytorch_model.bin"
        else:
            cfg, w = "musetalkV15/musetalk.json", "musetalkV15/unet.pth"
        cfg_p, w_p = models_dir / cfg, models_dir / w
        check(cfg, version, partial(_describe_unet_config, cfg_p))
        check(w, version, partial(unet.verify_file, cfg_p, w_p))
        if version == "v1":
            check(
                "whisper/tiny.pt",
                version,
                lambda: audio_features.verify_file(models_dir / "whisper" / "tiny.pt"),
            )
        else:
            check(
                "whisper/config.json",
                version,
                lambda: audio_features.describe_hf_config(models_dir / "whisper"),
            )
            check(
                "whisper/pytorch_model.bin",
                version,
                lambda: audio_features.verify_file(models_dir / "whisper"),
            )
        check(
            "sd-vae-ft-mse/config.json",
            version,
            lambda: vae.describe_config(
                read_json(require(models_dir, "sd-vae-ft-mse/config.json"))
            ),
        )
        check(
            "sd-vae-ft-mse/diffusion_pytorch_model.bin",
            version,
            lambda: vae.verify_file(models_dir / "sd-vae-ft-mse"),
        )
        check(
            "face-parse-bisent/resnet18-5c106cde.pth",
            version,
            lambda: blending.verify_backbone(models_dir / "face-parse-bisent"),
        )
        check(
            "face-parse-bisent/79999_iter.pth",
            version,
            lambda: blending.verify_parsing(models_dir / "face-parse-bisent"),
        )
        check(
            "dwpose/dw-ll_ucoco_384.pth",
            version,
            lambda: "present (not used: landmarks come from digihuman.face)",
            required=False,
        )
    return rows
