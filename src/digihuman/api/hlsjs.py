"""hls.js, vendored for the live viewer page's HLS fallback (browsers without native HLS).

The file comes from the npm package ``hls.js`` (Apache-2.0, by Dailymotion and contributors):
``scripts/install.sh`` runs ``npm pack hls.js@<VERSION>`` and ``python -m digihuman.setup_offline
--hlsjs-tgz <tarball>`` checks the tarball and ``package/dist/hls.min.js`` against the sha256
recorded here and places it, with the package's LICENSE, in :func:`default_dir`. The API serves
it at ``GET /v1/static/hls.min.js``; nothing is fetched at run time and no CDN is used.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from digihuman.engines.tts.kokoro_files import sha256_file, verified_once
from digihuman.errors import MissingWeightsError

VERSION = "1.7.4"
NPM_PACKAGE = f"hls.js@{VERSION}"
NPM_TARBALL = f"hls.js-{VERSION}.tgz"
NPM_TARBALL_SHA256 = "e4ab3d5d13f7cca9ef241d098f39686e19fd451831ba07dc9943482fd5ff75c7"
FILE = "hls.min.js"
FILE_SHA256 = "cfc70cc9e9fc63d071919e087670abc760c8fd1bc889b88588026e4d22193bbe"
INSTALL_HINT = "install it with 'bash scripts/install.sh' (npm pack " + NPM_PACKAGE + ")"


def default_dir() -> Path:
    """Where the vendored web files live (beside the other offline files)."""
    return Path.home() / ".cache" / "digihuman" / "web"


def installed(folder: Path | None = None) -> Path | None:
    """``hls.min.js`` when it is in place with the recorded sha256 (hashed once per change)."""
    path = (folder or default_dir()) / FILE
    try:
        return path if path.is_file() and verified_once(path, FILE_SHA256) else None
    except OSError:
        return None


def install(tarball: Path, folder: Path | None = None) -> Path:
    """Take ``package/dist/hls.min.js`` (and ``package/LICENSE``) from the npm tarball into
    ``folder``; the tarball and the file are checked against the recorded sha256."""
    out = folder or default_dir()
    got = sha256_file(Path(tarball))
    if got != NPM_TARBALL_SHA256:
        raise MissingWeightsError(
            f"{tarball} has sha256 {got}, expected {NPM_TARBALL_SHA256} ({NPM_PACKAGE}); "
            "delete it and rerun scripts/install.sh"
        )
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for member, name, sha in (
            (f"package/dist/{FILE}", FILE, FILE_SHA256),
            ("package/LICENSE", "hls.js-LICENSE", None),
        ):
            src = tar.extractfile(member)
            if src is None:  # pragma: no cover - the checked tarball holds both
                raise MissingWeightsError(f"{tarball} has no {member}")
            tmp = out / f"{name}.partial"
            with src, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f)
            if sha is not None and sha256_file(tmp) != sha:
                tmp.unlink()
                raise MissingWeightsError(f"{member} in {tarball} fails its sha256 ({sha})")
            tmp.replace(out / name)
    return out / FILE
