"""Tools a chat model may call: the ``Tool`` protocol, the built-ins and the bounded loop.

Tools are plugins in the ``ragtide.tools`` entry-point group and enabled per tenant;
``ToolEngine`` runs a model with them (see ``ragtide.tools.engine``).
"""

from __future__ import annotations

from ragtide.tools.base import (
    DocumentFn,
    SearchFn,
    Tool,
    ToolContext,
    ToolError,
    check_arguments,
    openai_tool,
)
from ragtide.tools.engine import (
    ToolCallFinished,
    ToolCallingModel,
    ToolCallStarted,
    ToolEngine,
    ToolLimits,
    ToolRecord,
    ToolRun,
)

__all__ = [
    "DocumentFn",
    "SearchFn",
    "Tool",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolCallingModel",
    "ToolContext",
    "ToolEngine",
    "ToolError",
    "ToolLimits",
    "ToolRecord",
    "ToolRun",
    "check_arguments",
    "openai_tool",
]
