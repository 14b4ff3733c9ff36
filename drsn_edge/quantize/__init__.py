"""INT8 post-training quantization: calibration methods, QDQ ONNX, TensorRT-rule linter, sensitivity."""
