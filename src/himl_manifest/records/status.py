"""Run statuses: each store's words and :class:`~himl_manifest.model.RunStatus`."""

from __future__ import annotations

from himl_manifest.model import RunStatus

#: MLflow run statuses -> ours.
MLFLOW_TO_STATUS = {
    "SCHEDULED": RunStatus.QUEUED,
    "RUNNING": RunStatus.RUNNING,
    "FINISHED": RunStatus.COMPLETED,
    "FAILED": RunStatus.FAILED,
    "KILLED": RunStatus.CANCELLED,
}
#: Ours -> MLflow's.
STATUS_TO_MLFLOW = {status: word for word, status in MLFLOW_TO_STATUS.items()}
MLFLOW_ACTIVE = frozenset({"SCHEDULED", "RUNNING"})


def status_from_mlflow(word: str | None) -> RunStatus:
    return MLFLOW_TO_STATUS.get(str(word), RunStatus.QUEUED)


#: Azure ML job statuses -> ours. Terminal on Azure ML: Completed, Failed, Canceled,
#: NotResponding and Paused; the last two end a job without success, so a plan retries them
#: (a paused job does not resume by itself).
AZUREML_TO_STATUS = {
    "NotStarted": RunStatus.QUEUED,
    "Queued": RunStatus.QUEUED,
    "Preparing": RunStatus.QUEUED,
    "Provisioning": RunStatus.QUEUED,
    "Starting": RunStatus.RUNNING,
    "Running": RunStatus.RUNNING,
    "Finalizing": RunStatus.RUNNING,
    "CancelRequested": RunStatus.RUNNING,
    "Completed": RunStatus.COMPLETED,
    "Failed": RunStatus.FAILED,
    "Canceled": RunStatus.CANCELLED,
    "NotResponding": RunStatus.FAILED,
    "Paused": RunStatus.CANCELLED,
    "Unknown": RunStatus.QUEUED,
}
#: Azure ML statuses of a job that has ended.
AZUREML_TERMINAL = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})


def status_from_azureml(word: object) -> RunStatus:
    """An Azure ML job status (a string or the SDK's ``JobStatus``) -> ours; an unknown word
    is queued (not ended: a plan waits rather than resubmits)."""
    text = str(getattr(word, "value", word) or "")
    return AZUREML_TO_STATUS.get(text, RunStatus.QUEUED)
