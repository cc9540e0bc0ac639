"""Media I/O: audio decode/resample, image and video read, H.264 + AAC MP4 write.

Import from the submodules (``digihuman.media.audio``, ``.video``, ``.ffmpeg``); this package
imports nothing heavy itself.
"""
