"""Command-line interface: a thin shell over the Python API.

Each command group lives in its own module and registers itself on :data:`app`. Errors are printed as
one line (``error: ...``) and mapped to documented exit codes; ``--debug`` shows the traceback.

Exit codes:

===  ==========================================================================================
0    success
1    a quality check failed (``gate`` budgets, ``apply --verify`` misses, ``compress`` targets,
     ``monitor --fail-on``)
2    usage error: bad arguments, options, configuration or parameters; a storage URL that is not one
3    bad input: an image, preset, state file or study storage that cannot be read or used; an output
     that cannot be written; in a batch, any input that could not be processed
4    missing dependency or pretrained weights
5    unexpected internal error (a bug: please report it with ``--debug`` output)
130  interrupted (Ctrl-C); finished work is kept
===  ==========================================================================================

Batches (``evaluate``/``gate`` on folders, ``compress``, ``apply``, ``monitor``) follow one rule: every
input that can be processed is and the reports are written; then, if any input could not be read or
processed, the run exits 3 with one error line naming the first (:func:`~optimizer.cli._app.fail_batch`).
Exit 3 comes before 1. Unpaired files are listed, not failures (``gate`` fails on them unless
``--allow-missing``). Ctrl-C during a folder ``evaluate`` writes the reports with what finished, exit 130.
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
