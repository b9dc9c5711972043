"""Command-line interface: a thin shell over the Python API.

Each command group lives in its own module and registers itself on :data:`app`. Errors are printed as
one line (``error: ...``) and mapped to documented exit codes; ``--debug`` shows the traceback.

Exit codes:

===  ==========================================================================================
0    success
1    a quality check failed (``gate`` budgets, ``apply --verify`` misses, ``compress`` targets)
2    usage error: bad arguments, options, configuration or parameters
3    bad input: an image or preset that cannot be read or used
4    missing dependency or pretrained weights
5    unexpected internal error (a bug: please report it with ``--debug`` output)
130  interrupted (Ctrl-C); finished work is kept
===  ==========================================================================================
"""

from __future__ import annotations

from . import codecs_cmd as _codecs_cmd  # noqa: F401  (registers commands)
from . import compress_cmd as _compress_cmd  # noqa: F401
from . import evaluate_cmd as _evaluate_cmd  # noqa: F401
from . import monitor_cmd as _monitor_cmd  # noqa: F401
from . import presets_cmd as _presets_cmd  # noqa: F401
from . import report_cmd as _report_cmd  # noqa: F401
from . import serve_cmd as _serve_cmd  # noqa: F401
from . import tune_cmd as _tune_cmd  # noqa: F401
from . import worker_cmd as _worker_cmd  # noqa: F401
from ._app import (
    EXIT_CHECK_FAILED,
    EXIT_DEPENDENCY,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    app,
    main,
)

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_DEPENDENCY",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "app",
    "main",
]
