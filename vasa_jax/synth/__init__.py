"""Procedural synthetic talking heads: 3D head renderer, espeak-ng speech, motion scripts."""
