"""`python -m serving {agent|aggregator|transformer} [kserve args…]`: the serving image's entrypoint.

Each role is its own KServe server, `serving/<role>/__main__.py` (also runnable as `python -m serving.<role>`).
"""

import runpy
import sys

ROLES = ("agent", "aggregator", "transformer")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ROLES:
        sys.exit(f"usage: python -m serving {{{'|'.join(ROLES)}}} [options]")
    role = sys.argv.pop(1)
    runpy.run_module(f"serving.{role}", run_name="__main__", alter_sys=True)
