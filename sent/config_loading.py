"""Reading a config: YAML (duplicate keys refused, alias bombs bounded), ``extends:`` chains,
``key.path=value`` overrides, credentials in URIs refused, then the typed `SentConfig` with every
error named by key and file. The schema itself is `sent.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sent.config import SentConfig
from sent.config_base import ConfigError
from sent.redaction import redact_text


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a raw config dict; the value is parsed as YAML (``1e-6``, ``[1, 2]``)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key.path=value")
    path, _, text = override.partition("=")
    keys = path.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {override!r} has an empty key")
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {key!r} is not a section")
        node = child
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader) if text.strip() else None  # a SafeLoader
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {redact_text(override)!r}: the value is not valid YAML ({problem})") from None
    _check_size(value, f"override {path.strip()}")
    node[keys[-1]] = value


MAX_CONFIG_VALUES = 100_000
"""More values than any config has: past it, YAML aliases are being expanded into a bomb."""


def _check_size(value: Any, where: str) -> None:
    """Refuse a YAML structure of more than `MAX_CONFIG_VALUES` values once its aliases are
    expanded. A 1 KB file of nested aliases (an alias bomb) is a graph of billions of values: it
    loads in microseconds, shared, and then hangs whatever dumps or digests it. The walk stops at
    the bound, so checking costs at most that many steps."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{where}: more than {MAX_CONFIG_VALUES:,} values once its YAML aliases are expanded; "
                "a config is far smaller (an alias bomb?)"
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _uri_with_credentials(value: Any, key: str = "") -> str | None:
    """The key path of the first string in ``value`` that holds a URI with credentials (user
    information, or a query value named like a secret: `sent.redaction`)."""
    if isinstance(value, str):
        return key if redact_text(value) != value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _uri_with_credentials(v, f"{key}.{k}" if key else str(k))
        if found is not None:
            return found
    return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a mapping with the same key twice is an error: a silently
    dropped first value is a setting the user believes in and does not get."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in first_line:
            problem = f"duplicate key {key!r} at line {line} (first at line {first_line[key]})"
            raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        first_line[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _format_errors(exc: ValidationError, where: str) -> str:
    lines = [f"invalid configuration {where}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    """One YAML file as a mapping; every way it can be unreadable is a `ConfigError` naming it."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}  # a SafeLoader
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"{path}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {exc.start})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    _check_size(raw, str(path))
    return raw


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key; any other value (a list too) replaces."""
    out = dict(base)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``path``'s mapping over the one it ``extends:`` (a file path relative to it), recursively."""
    raw = _read_yaml(path)
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends must be the path of one config file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in (*chain, path.resolve()):
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve(), base_path))
        raise ConfigError(f"{path}: extends makes a cycle: {cycle}")
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends {base!r}, but {base_path} does not exist")
    return _merge(_read_with_bases(base_path, (*chain, path.resolve())), raw)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SentConfig:
    """Load and validate a YAML config, applying ``key.path=value`` overrides. A config may
    start from another with ``extends: <file>`` (relative to it): its keys are merged over the
    base's, mappings key by key, so a preset keeps only what differs."""
    path = Path(path)
    raw = _read_with_bases(path)
    for override in overrides:
        apply_override(raw, override)
    secret = _uri_with_credentials(raw)
    if secret is not None:  # refused before anything is written, and the value is never printed
        raise ConfigError(
            f"{path}: {secret} holds credentials in a URI. A run stores its config in run.json, MLflow and "
            "Prefect's database, so credentials go in the environment: MLFLOW_TRACKING_URI, or "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), and a "
            "storage service's own credential variables"
        )
    raw["source"] = str(path)
    raw["overrides"] = list(overrides)
    try:
        return SentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            _format_errors(exc, f"in {path}" + (f" with {list(overrides)}" if overrides else ""))
        ) from None
