"""Tasks: what a user brings to a federated job (model, per-client data, local training).

A job names its task as `module:function`; `load_task` imports it. Built-ins:
`fedkube.tasks.digits:task` and `fedkube.tasks.breast_cancer:task`.
"""

from fedkube.tasks.base import (
    ClassificationTask,
    InMemoryClassificationTask,
    Task,
    TaskError,
    TrainResult,
    load_task,
)
from fedkube.tasks.partition import partition_indices

__all__ = ["ClassificationTask", "InMemoryClassificationTask", "Task", "TaskError", "TrainResult",
           "load_task", "partition_indices"]
