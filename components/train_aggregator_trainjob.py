"""train-aggregator as a Kubeflow Trainer v2 TrainJob on several nodes: created, node-0 log streamed, waited on."""

from cmva.kfp_components import train_aggregator_trainjob

__all__ = ["train_aggregator_trainjob"]
