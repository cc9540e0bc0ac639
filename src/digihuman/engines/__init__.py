"""Engines: lip-sync, TTS, ASR, expression, questions. Each kind has one contract in base.py."""
