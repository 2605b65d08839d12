"""Is the current JSON Schema of an event's ``data`` still the one a version was released with?

``breaking(event, version, released, current)`` compares two schemas of the SAME event type and
version — the released file and the model as it is now — and returns what breaks, one line each,
naming the event, the version and the field's path, the way a schema registry's compatibility check
does. The question is the reader's: is every document valid under the released schema still valid
under the current one (data recorded under the release is read by the current model)?

Breaking: a field removed; a field retyped (its type changed, nested objects through ``$ref`` into
``$defs`` and arrays' items included, a union (``anyOf``) that loses a branch); a field newly
required (a field added without a default); an enum narrowed or a ``const`` changed; bounds narrowed
(``maxLength``/``maximum``/``maxItems`` lowered, ``minLength``/``minimum``/``minItems`` raised,
a ``pattern`` changed). Compatible: an optional field added (it has a default), an enum widened,
bounds widened, a type widened (``integer`` to ``number``, a branch added), titles, descriptions
and defaults changed. Objects are compared by their shape, not by their model's name.

The current version is compared field by field, and so is an older version read through
``added(...)`` alone (engine.schemas.released: that upcaster changes nothing), both ways (a producer
pinned to it publishes the current data, the added fields dropped). An older version behind
an upcaster of its own is read through it (``engine.versions.check`` makes sure there is one from each
older version), so its released file is a record of what was written then, not a shape the current
model must accept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

Schema = dict[str, Any]

UPPER = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
LOWER = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
SHAPES: dict[str, type | tuple[type, ...]] = {
    "properties": dict, "$defs": dict, "required": list, "enum": list, "prefixItems": list, "anyOf": list,
    "oneOf": list, "allOf": list, "items": (dict, bool), "additionalProperties": (dict, bool),
}  # fmt: skip


class Side:
    """One schema with its ``$defs``: ``$ref`` resolved against its own root."""

    def __init__(self, root: Schema) -> None:
        if not isinstance(root, dict):
            raise ValueError(f"a JSON Schema is an object, not {type(root).__name__}")
        self.root = root

    def resolve(self, node: Any) -> Schema:
        """``node`` with its ``$ref`` (and a lone ``allOf``) merged in; its own keywords win."""
        seen: set[str] = set()
        node = schema(node)
        while True:
            if "$ref" in node:
                ref = node["$ref"]
                if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
                    raise ValueError(f"cannot resolve $ref {json.dumps(ref)[:60]}")
                seen.add(ref)
                target: Any = self.root
                for part in ref[2:].split("/"):
                    if not isinstance(target, dict) or part not in target:
                        raise ValueError(f"$ref {ref!r} leads nowhere")
                    target = target[part]
                node = {**schema(target), **{k: v for k, v in node.items() if k != "$ref"}}
            elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
                node = {**schema(node["allOf"][0]), **{k: v for k, v in node.items() if k != "allOf"}}
            else:
                return checked(node)

    def branches(self, node: Any) -> list[Schema]:
        """The alternatives ``node`` accepts: its ``anyOf``/``oneOf`` flattened, a list of types split."""
        node = self.resolve(node)
        for keyword in ("anyOf", "oneOf"):
            if isinstance(node.get(keyword), list):
                rest = {k: v for k, v in node.items() if k != keyword}
                return [b for option in node[keyword] for b in self.branches({**rest, **self.resolve(option)})]
        if isinstance(node.get("type"), list):
            return [{**node, "type": t} for t in node["type"]]
        return [node]


def schema(node: Any) -> Schema:
    """``node`` as a schema: an object (``true``: anything); else ``ValueError`` in one line."""
    if node is True:
        return {}
    if not isinstance(node, dict):
        raise ValueError(f"a schema is an object, not {json.dumps(node)[:40]}")
    return node


def checked(node: Schema) -> Schema:
    """``node``, if its keywords have the shapes JSON Schema gives them; else ``ValueError`` in one line."""
    for keyword, shape in SHAPES.items():
        if keyword in node and not isinstance(node[keyword], shape):
            raise ValueError(f"{keyword} is {json.dumps(node[keyword])[:40]}, not a JSON Schema's {keyword}")
    types = node.get("type", [])
    for name in [*(types if isinstance(types, list) else [types]), *node.get("required", [])]:
        if not isinstance(name, str):
            raise ValueError(f"type and required hold names, not {json.dumps(name)[:40]}")
    return node


def kind(node: Schema) -> str:
    """What a branch is: a JSON type, or ``any``."""
    if isinstance(node.get("type"), str):
        return str(node["type"])
    if "properties" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    values = accepted(node)
    found = {JSON_TYPES.get(type(v), "any") for v in values} if values is not None else {"any"}
    return found.pop() if len(found) == 1 else "any"


def accepts_kind(current: str, released: str) -> bool:
    return current in (released, "any") or (released == "integer" and current == "number")


def accepted(node: Schema) -> list[Any] | None:
    """The only values a branch takes (``const`` or ``enum``), or None: no such limit."""
    if "const" in node:
        return [node["const"]]
    if isinstance(node.get("enum"), list):
        return list(node["enum"])
    return None


def shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class Comparison:
    """The walk over a released schema and the current one, side by side."""

    def __init__(self, released: Schema, current: Schema) -> None:
        self.old, self.new = Side(released), Side(current)
        self.walking: set[tuple[int, int]] = set()  # the pairs being compared: a recursive model ends

    def node(self, path: str, released: Any, current: Any) -> Iterator[tuple[str, str]]:
        old, new = self.old.branches(released), self.new.branches(current)
        for branch in old:
            candidates = [b for b in new if accepts_kind(kind(b), kind(branch))]
            if not candidates:
                now = " | ".join(dict.fromkeys(kind(b) for b in new))
                if len(old) == 1:
                    yield path, f"retyped from {kind(branch)} to {now}"
                else:
                    yield path, f"no longer accepts {kind(branch)} (a branch of its union removed; now {now})"
                continue
            # a union of several objects: the closest branch is the one it became
            found = [list(self.branch(path, branch, c)) for c in candidates]
            yield from min(found, key=len)

    def branch(self, path: str, released: Schema, current: Schema) -> Iterator[tuple[str, str]]:
        pair = (id(released.get("properties")), id(current.get("properties")))
        if "properties" in released and pair in self.walking:
            return
        yield from self.values(path, released, current)
        yield from self.bounds(path, released, current)
        if kind(current) == "any":
            return
        if kind(released) == "object":
            self.walking.add(pair)
            yield from self.object(path, released, current)
            self.walking.discard(pair)
        elif kind(released) == "array":
            yield from self.array(path, released, current)

    def values(self, path: str, released: Schema, current: Schema) -> Iterator[tuple[str, str]]:
        old, new = accepted(released), accepted(current)
        if new is None:
            return
        if old is None:
            yield path, f"now limited to {', '.join(map(shown, new))}"
            return
        lost = [v for v in old if v not in new]
        if lost and "const" in released and "const" in current:
            yield path, f"const changed from {shown(released['const'])} to {shown(current['const'])}"
        elif lost:
            yield path, f"enum narrowed: {', '.join(map(shown, lost))} no longer accepted"

    def bounds(self, path: str, released: Schema, current: Schema) -> Iterator[tuple[str, str]]:
        for keyword in (*UPPER, *LOWER):
            old, new = released.get(keyword), current.get(keyword)
            if not isinstance(new, int | float) or isinstance(new, bool):
                continue
            if not isinstance(old, int | float):
                yield path, f"{keyword} {shown(new)} added"
            elif (new < old) if keyword in UPPER else (new > old):
                yield path, f"{keyword} {'lowered' if keyword in UPPER else 'raised'} from {shown(old)} to {shown(new)}"
        if "pattern" in current and current["pattern"] != released.get("pattern"):
            was = f"from {shown(released['pattern'])} " if "pattern" in released else ""
            yield path, f"pattern changed {was}to {shown(current['pattern'])}"

    def object(self, path: str, released: Schema, current: Schema) -> Iterator[tuple[str, str]]:
        old, new = released.get("properties") or {}, current.get("properties") or {}
        required = set(current.get("required") or ()) - set(released.get("required") or ())
        for name, schema in old.items():
            where = f"{path}.{name}" if path else name
            if name not in new:
                yield where, "field removed"
            else:
                yield from self.node(where, schema, new[name])
        for name in new:
            where = f"{path}.{name}" if path else name
            if name in required:
                yield where, "required field added without a default" if name not in old else "now required"
        extra_old, extra_new = released.get("additionalProperties"), current.get("additionalProperties")
        if isinstance(extra_new, dict) and isinstance(extra_old, dict):
            yield from self.node(f"{path}.*" if path else "*", extra_old, extra_new)
        elif extra_new is False and extra_old is not False:
            yield path, "no longer takes fields it does not name (additionalProperties: false)"

    def array(self, path: str, released: Schema, current: Schema) -> Iterator[tuple[str, str]]:
        old, new = released.get("prefixItems") or [], current.get("prefixItems") or []
        if new and len(old) != len(new):
            yield path, f"retyped from {f'a tuple of {len(old)}' if old else 'an array'} to a tuple of {len(new)}"
        for i, (was, now) in enumerate(zip(old, new, strict=False)):
            yield from self.node(f"{path}[{i}]", was, now)
        if "items" in current and not new:
            for i, was in enumerate(old):  # a tuple become an array: each of its items still taken
                yield from self.node(f"{path}[{i}]", was, current["items"])
            if "items" in released or not old:
                yield from self.node(f"{path}[]", released.get("items", {}), current["items"])


def breaking(event: str, version: int, released: Schema, current: Schema) -> list[str]:
    """What breaks a reader of ``event``'s version ``version`` as released, one line each, in the order
    of the fields; [] when the current schema is compatible. ``ValueError`` for a schema it cannot read."""
    lines = []
    for path, what in Comparison(released, current).node("", released, current):
        lines.append(f"{event} v{version}: {path or '(data)'}: {what}")
    return list(dict.fromkeys(lines))
