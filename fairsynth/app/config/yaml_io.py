"""Reading ``params.yaml``: YAML 1.2 booleans, no repeated keys, and bounded size (the bytes of
the document and its values once aliases are expanded are checked before any object is built)."""

from __future__ import annotations

import re

import yaml

from fairsynth.app.config.base import ConfigError, _short

MAX_PARAMS_BYTES = 1 << 20  # a params file is a few KB
MAX_YAML_NODES = 100_000  # after aliases are expanded: an alias bomb expands exponentially


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. Class names such as ``no``/``yes`` stay strings."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """Mappings refuse a repeated key (YAML would silently keep the last one)."""
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base`: merged keys may be overridden, that is its point
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise ConfigError(f"line {line}: a mapping key must be a plain value") from None
        if key in seen:
            raise ConfigError(
                f"duplicate key {_short(key)} (lines {seen[key]} and {line}); give each key once"
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """Nodes of the document once every alias is expanded (stops counting past ``limit``)."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        if id(n) in active:
            return limit + 1  # a recursive structure: infinite once expanded
        active.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        active.discard(id(n))
        memo[id(n)] = total
        return total

    return size(node)


def yaml_load(text: str):
    """YAML 1.2 booleans, no repeated keys, and bounded size: the document's bytes and its
    nodes after alias expansion are checked before any object is built."""
    if len(text) > MAX_PARAMS_BYTES:
        raise ConfigError(f"params: {len(text):,} bytes, more than {MAX_PARAMS_BYTES:,} allowed")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(
                f"params: more than {MAX_YAML_NODES:,} values once aliases are expanded "
                "(an alias bomb?)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
