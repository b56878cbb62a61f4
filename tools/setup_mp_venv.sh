#!/usr/bin/env bash
# A separate virtualenv with mediapipe 0.10.14 for tools/face_check.py. mediapipe pins
# protobuf<5, which conflicts with TensorFlow/grain in the project's .venv, so it lives apart.
set -euo pipefail
VENV=${1:-tools/.mp-venv}
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet mediapipe==0.10.14
echo "$VENV/bin/python"
