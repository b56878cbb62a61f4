"""Trainers for both stages and what they share."""
