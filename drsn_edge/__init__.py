"""drsn-edge: Deep Residual Shrinkage Networks from vibration data to verified INT8 edge classifiers."""

__version__ = "0.1.0"
