"""RouteLab from Python: load a model, run prompts with capture and interventions, read the
captures as numpy arrays, and run RouteLab's analyses, with the names the CLI, the GUI,
notebooks and trace files use.

    import routelab
    session = routelab.load("tiny-moe")
    trace = session.generate("fn main() {", max_new_tokens=16,
                             interventions=["layers.1.experts.3:drop"])
    trace.router_experts(1)          # numpy uint32 [T, K]
    trace.view("expert-load")        # a figure: shows inline in Jupyter, .save("load.png")
"""

import os as _os

# candle's element-wise pool spins for about a millisecond after each op on cores the matmul
# pool needs; the CLI caps it the same way before any thread starts.
_os.environ.setdefault("CANDLE_BARRIER_POOL_SPIN_LIMIT", "200")

#: Progress bars of long calls when a call leaves ``progress`` None: None (a tqdm bar for calls
#: over a second, in notebooks and terminals, when tqdm is installed), True or False.
progress = None

#: How figures show inline in Jupyter: "png" or "svg".
inline_format = "png"

from . import _routelab  # noqa: E402
from ._routelab import (  # noqa: E402,F401
    Cancelled,
    DeviceError,
    Error,
    FileError,
    InvalidArgument,
    ModelError,
    OutOfMemory,
)
from ._figure import Figure, Table  # noqa: E402,F401
from ._session import Session, load  # noqa: E402,F401
from ._trace import Trace, open_trace  # noqa: E402,F401
from ._analyses import (  # noqa: E402,F401
    Ablation,
    Attribution,
    Patching,
    HeadsExperts,
    RetrievalScan,
    RoutingFidelity,
    RunDiff,
    Specialization,
    diff,
    routing_fidelity,
)

__version__ = _routelab.__version__

__all__ = [
    "load",
    "open_trace",
    "diff",
    "routing_fidelity",
    "Session",
    "Trace",
    "Figure",
    "Table",
    "RetrievalScan",
    "Ablation",
    "HeadsExperts",
    "Specialization",
    "RunDiff",
    "RoutingFidelity",
    "Patching",
    "Attribution",
    "Error",
    "FileError",
    "ModelError",
    "OutOfMemory",
    "InvalidArgument",
    "Cancelled",
    "DeviceError",
]
