"""wiremap: from serial-section EM tiles to a queryable, browsable connectome."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wiremap")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
