"""The numbers every layer shares, defined once: video rate, audio rate, emotion labels."""

FPS = 25                                   # video frames per second, everywhere
SAMPLE_RATE = 16000                        # audio samples per second, everywhere
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS     # 640
EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")   # the emotion control's labels
