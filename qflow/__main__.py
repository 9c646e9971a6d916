import gc
import sys

# The cyclic collector would walk the import-time objects (numpy, pandas, pydantic models) several times
# while they load, and again at each later full collection: off while importing, then frozen out of its scans.
gc.disable()
from qflow.cli import main  # noqa: E402

gc.freeze()
gc.enable()
sys.exit(main())
