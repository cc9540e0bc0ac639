"""MuseTalk v1.0 / v1.5 lip-sync: the official weights, re-implemented computation.

Modules: :mod:`.weights` (layout, strict loading, download, verify), :mod:`.audio_features`
(whisper encoder + per-frame windows), :mod:`.unet`, :mod:`.vae`, :mod:`.blending` (face
parsing + paste back), :mod:`.crop` (crop box from 68 landmarks), :mod:`.engine`
(:class:`~.engine.MuseTalkEngine`). Importing this package imports nothing heavy.
"""
