"""Runtimes and compilers: one module per backend (onnxruntime, tensorrt, tflite, tflm)."""
