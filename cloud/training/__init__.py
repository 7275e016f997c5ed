"""Model training: scikit-learn Isolation Forests per sensor profile, exported to ONNX bundles.

- ``train``/``onnx_export``: fit, calibrate, export the compact ONNX, sign a bundle;
- ``initial``: the first models, from the simulator's bundled replay data;
- ``pipeline`` (``smaint train``, ``cli``): retrain from the cloud database's readings
  (``dataset``), measure on the held-out end of the window and on operator-labelled alerts
  (``evaluate``), track and register in MLflow (``tracking``), and let the champion gate
  (``champion``) decide whether the new version replaces the current one; ``config`` holds
  :class:`~cloud.training.config.TrainingConfig`.
"""
