"""Vibration data: simulator, noise, importers, windowing and the dataset file."""
