"""Errors that name what the user got wrong.

Every mistake a user can make (a missing layer, a corrupt file, a wrong dtype,
a malformed URL) raises a subclass of :class:`WiremapError`.  The CLI turns
these into a one-line message and exit code 2; anything else is a bug and
keeps its traceback.
"""


class WiremapError(Exception):
    """Base class of all user-facing errors."""


class WorkspaceError(WiremapError):
    """The workspace is missing, malformed or cannot be reached."""


class LayerNotFoundError(WorkspaceError):
    """A named layer or table does not exist in the workspace."""


class LayerExistsError(WorkspaceError):
    """A layer already exists and ``overwrite`` was not asked for."""


class InputError(WiremapError):
    """An input file or array is unreadable or has the wrong shape/dtype."""


class ConfigError(WiremapError):
    """A configuration value or file is malformed."""
