"""KServe agent server for cmva: `python -m serving.agent --help`."""

from cmva.serving.servers import main_agent

if __name__ == "__main__":
    main_agent()
