"""MLflow: one run per trained profile, the model registry and the ``champion`` alias.

mlflow is imported when a :class:`Tracker` is made, not with this module: ``smaint train
--help`` and the API's start stay fast, and nothing the gateway imports can pull it in.

The fluent run API keeps the tracking URI in process-global state: a process that trains
should train against one store (the CLI and the cloud's job worker both do).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud.exceptions import CloudError
from cloud.training.config import TrainingConfig

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
BUNDLE_DIR = "bundle"
_MAX_TAG = 5000  # MLflow's limit on a tag value


class TrackingError(CloudError):
    """MLflow's store could not be reached or refused a write."""

    http_status = 503


def mlflow_errors() -> tuple[type[Exception], ...]:
    """MLflow's exception type once mlflow is loaded (nothing to catch before): for ``except``."""
    module = sys.modules.get("mlflow.exceptions")
    return () if module is None else (module.MlflowException,)


class Tracker:
    """Runs, artifacts and registry operations on one MLflow store and experiment."""

    def __init__(self, config: TrainingConfig) -> None:
        with warnings.catch_warnings():
            # mlflow.pyfunc (which the ONNX flavour loads) warns about mlflow's own type hints
            # on import: noise on every training's terminal, and nothing we can act on.
            warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType",
                                    category=UserWarning)
            import mlflow  # noqa: PLC0415 (slow import: see module docstring)
            import mlflow.onnx  # noqa: PLC0415
            import mlflow.pyfunc  # noqa: PLC0415
        from mlflow.exceptions import MlflowException  # noqa: PLC0415

        self._mlflow = mlflow
        self._error = MlflowException
        self.tracking_uri = config.resolved_tracking_uri()
        if self.tracking_uri.startswith("sqlite:"):
            config.data_dir.mkdir(parents=True, exist_ok=True)
        registry_uri = config.resolved_registry_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(registry_uri)
        self.client = mlflow.MlflowClient(self.tracking_uri, registry_uri)
        try:
            self.experiment_id = self._experiment(config.experiment,
                                                  config.resolved_artifact_location())
        except MlflowException as exc:
            raise TrackingError(f"MLflow store {self.tracking_uri} is unusable: {exc.message}; "
                                f"check the tracking URI") from exc

    def _experiment(self, name: str, artifact_location: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=artifact_location))
        except self._error:
            # Another trainer created it between our look and our create.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    @contextmanager
    def run(self, name: str, tags: dict[str, str]) -> Iterator[str]:
        """An MLflow run (its id); it ends FAILED if the block raises."""
        with self._mlflow.start_run(experiment_id=self.experiment_id, run_name=name,
                                    tags=tags) as active:
            yield str(active.info.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        """Parameters of the active run."""
        self._mlflow.log_params({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Metrics of the active run."""
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags of the active run (values cut to MLflow's limit)."""
        self._mlflow.set_tags({k: v[:_MAX_TAG] for k, v in tags.items()})

    def log_files(self, files: dict[str, bytes], artifact_dir: str = BUNDLE_DIR) -> None:
        """Store ``files`` (name -> bytes) under ``artifact_dir`` of the active run."""
        with tempfile.TemporaryDirectory(prefix="smaint-train-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            self._mlflow.log_artifacts(tmp, artifact_path=artifact_dir)

    def register_onnx(self, onnx_bytes: bytes, model_name: str) -> str:
        """Log the ONNX model with the active run and register it; returns the new version."""
        import onnx  # noqa: PLC0415

        info = self._mlflow.onnx.log_model(
            onnx_model=onnx.load_from_string(onnx_bytes), name="model",
            registered_model_name=model_name)
        if info.registered_model_version is None:
            raise TrackingError(f"MLflow did not register a version of {model_name}")
        return str(info.registered_model_version)

    def champion(self, model_name: str) -> ModelVersion | None:
        """The version holding the champion alias, or None if the model has none yet."""
        try:
            return self.client.get_model_version_by_alias(model_name, CHAMPION)
        except self._error as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise

    def download(self, run_id: str, artifact_path: str) -> bytes:
        """The bytes of one artifact file of a run; TrackingError if it cannot be read."""
        with tempfile.TemporaryDirectory(prefix="smaint-train-") as tmp:
            try:
                local = self.client.download_artifacts(run_id, artifact_path, tmp)
                return Path(local).read_bytes()
            except (self._error, OSError) as exc:
                raise TrackingError(f"run {run_id} has no readable {artifact_path}: "
                                    f"{exc}") from exc

    def tag_version(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        """Tags on a registered model version."""
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, version, key, value[:_MAX_TAG])

    def promote(self, model_name: str, version: str) -> None:
        """Point the champion alias at ``version``."""
        self.client.set_registered_model_alias(model_name, CHAMPION, version)
