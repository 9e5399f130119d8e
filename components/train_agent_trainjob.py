"""train-agent as a Kubeflow Trainer v2 TrainJob over several nodes: created, its node-0 log streamed, waited on."""

from cmva.kfp_components import train_agent_trainjob

__all__ = ["train_agent_trainjob"]
