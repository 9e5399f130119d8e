"""KServe aggregator server for cmva: `python -m serving.aggregator --help`."""

from cmva.serving.servers import main_aggregator

if __name__ == "__main__":
    main_aggregator()
