"""Model training: scikit-learn Isolation Forests per sensor profile, exported to ONNX bundles."""
