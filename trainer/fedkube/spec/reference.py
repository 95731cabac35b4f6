"""The manifest reference, generated from the CRD so the documentation cannot drift from the schema.

`python -m fedkube.spec.reference` prints it; the README holds a copy between markers, and a
test regenerates it and compares.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fedkube.spec.schema import openapi_schema

START = "<!-- manifest-reference:start -->"
END = "<!-- manifest-reference:end -->"


def _type(node: dict[str, Any]) -> str:
    kind = node.get("type", "object" if node.get("x-kubernetes-preserve-unknown-fields") else "")
    if kind == "array":
        return f"array of {_type(node.get('items', {}))}"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    return kind


def _limits(node: dict[str, Any]) -> str:
    parts = []
    if "minimum" in node:
        parts.append(f"{'>' if node.get('exclusiveMinimum') else '>='} {node['minimum']}")
    if "maximum" in node:
        parts.append(f"{'<' if node.get('exclusiveMaximum') else '<='} {node['maximum']}")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    return ", ".join(parts)


def rows(node: dict[str, Any], path: str, required: bool = False) -> Iterator[str]:
    default = f"`{node['default']}`" if "default" in node and node["default"] != {} else ""
    notes = node.get("description", "")
    if _limits(node):
        notes += f" ({_limits(node)})" if notes else _limits(node)
    notes = notes.replace("|", "\\|")
    yield f"| `{path}` | {_type(node)} | {'yes' if required else ''} | {default} | {notes} |"
    needed = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        yield from rows(child, f"{path}.{name}", name in needed)
    items = node.get("items", {})
    for name, child in items.get("properties", {}).items():
        yield from rows(child, f"{path}[].{name}", name in set(items.get("required", [])))


def reference() -> str:
    spec = openapi_schema()["properties"]["spec"]
    lines = ["| field | type | required | default | notes |", "|---|---|---|---|---|"]
    lines += list(rows(spec, "spec", True))[1:]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
