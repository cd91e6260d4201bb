"""The released import path, kept for scripts run from the repository root (``from metric import NLGEval``).
The code lives in the package (magic.metric, src/magic/metric/); this folder only re-exports it, and
``metric.nlgeval`` / ``metric.protocol`` / ``metric.significance`` are the package's own module objects."""
import sys

from magic.metric import *  # noqa: F401,F403
from magic.metric import __all__, nlgeval, protocol, significance  # noqa: F401

for _module in (nlgeval, protocol, significance):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
