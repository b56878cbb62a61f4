"""What every layer shares, defined once: video rate, audio rate, emotion labels, and the
bundled example media."""

import os

FPS = 25                                   # video frames per second, everywhere
SAMPLE_RATE = 16000                        # audio samples per second, everywhere
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS     # 640
EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")   # the emotion control's labels
# The bundled example portrait and speech (licences in its ATTRIBUTION.md).
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "examples")
EXAMPLE_PORTRAIT = os.path.join(EXAMPLES_DIR, "portrait.jpg")
EXAMPLE_SPEECH = os.path.join(EXAMPLES_DIR, "speech.flac")
