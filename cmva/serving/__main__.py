"""`python -m cmva.serving {agent|aggregator|transformer} [kserve args…]` (the serving image's entrypoint)."""

import sys

from cmva.serving import servers

ROLES = {"agent": servers.main_agent, "aggregator": servers.main_aggregator, "transformer": servers.main_transformer}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ROLES:
        sys.exit(f"usage: python -m cmva.serving {{{'|'.join(ROLES)}}} [options]")
    role = sys.argv.pop(1)
    ROLES[role]()
