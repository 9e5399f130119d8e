"""KServe transformer server for cmva: `python -m serving.transformer --help`."""

from cmva.serving.servers import main_transformer

if __name__ == "__main__":
    main_transformer()
