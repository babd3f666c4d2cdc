"""Workspace configuration (``wiremap.toml``): pydantic models, strict about keys.

The CLI, the Python API and ``wiremap.toml`` share these models; an unknown
key or a wrong type is a :class:`~wiremap.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import tomllib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wiremap.errors import ConfigError


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors: a typo in a config must not pass silently."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ExecutionConfig(StrictModel):
    """How blockwise stages run unless the command line says otherwise."""

    executor: str = Field("processes", pattern="^(serial|processes|dask)$")
    # serial: in this process (debugging); processes: a local process pool; dask: a Dask cluster
    workers: int = Field(2, ge=1)  # local worker processes (or LocalCluster workers)
    scheduler: str | None = None  # tcp://host:port of a running Dask scheduler


class WorkspaceConfig(StrictModel):
    """Contents of ``wiremap.toml``."""

    name: str  # a human-readable name of the dataset
    format_version: int = 1  # layout version of the workspace
    wiremap_version: str = ""  # the wiremap version that created it
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    def to_toml_dict(self) -> dict[str, Any]:
        return {
            "workspace": {
                "name": self.name,
                "format_version": self.format_version,
                "wiremap_version": self.wiremap_version,
            },
            "execution": self.execution.model_dump(exclude_none=True),
        }

    @classmethod
    def from_toml_dict(cls, data: dict[str, Any]) -> WorkspaceConfig:
        unknown = set(data) - {"workspace", "execution"}
        if unknown:
            raise ConfigError(f"wiremap.toml: unknown section(s) {sorted(unknown)}")
        try:
            return cls(**data.get("workspace", {}), execution=data.get("execution", {}))
        except ValidationError as exc:
            raise ConfigError(f"wiremap.toml: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}"


def load_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc


def dump_toml(data: dict[str, dict[str, Any]]) -> str:
    """Write a two-level dict (tables of scalars and lists) as TOML.

    Written here because the standard library only reads TOML and the configs
    are flat enough not to need a dependency for writing.
    """
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")
