"""YAML from input, parsed safely: no object tags, bounded aliases, no duplicate keys.

``yaml.safe_load`` refuses Python objects but not the rest of what a hostile or careless file
can do: 342 bytes of nested aliases (the "billion laughs") expand to hundreds of millions of
nodes and took 12 GB in two minutes; a key written twice (two ``people:`` blocks) silently keeps
the last one. Every YAML herald reads from input goes through :func:`parse` or :func:`load_file`:

- at most :data:`MAX_ALIASES` alias uses, and the document expanded (every alias counted as a
  copy of what it names) at most :data:`MAX_NODES` nodes, nested at most :data:`MAX_DEPTH` levels;
  an alias inside what it names is refused;
- a key twice in one mapping is refused, with both lines;
- an error says where, and never quotes the file's content (the file may not be YAML at all).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from herald.errors import HeraldError
from herald.safefiles import read_regular

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_NODES", "YamlError", "load_file", "parse"]

MAX_ALIASES = 100
MAX_NODES = 1_000_000
MAX_DEPTH = 100


class YamlError(HeraldError, ValueError):
    """A YAML input refused; each of ``problems`` starts with ``where:line``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class _Refused(yaml.YAMLError):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line, self.problem = line, problem


# libyaml's parser when present (six times faster on a 5 MB file); its composer keeps one node per
# anchor, so an alias is the same node object reached twice, which is what _check counts.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """The safe loader: no Python objects; limits are checked on the composed nodes, before construction."""


# A problem PyYAML words quotes the character or token it met: keep only its own vocabulary.
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_OWN = re.compile(r"^(<[a-z ]+>|[^\w\s]{1,3})$")


def _clean(problem: str) -> str:
    def keep(match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        return match.group(0) if _OWN.match(inner) else "(...)"

    return _QUOTED.sub(keep, problem)


_NAME = re.compile(r"^[\w.@-]{1,40}$")


def _check(root: yaml.Node, max_aliases: int, max_nodes: int) -> None:
    """Refuse too many aliases, an alias inside what it names, a big expansion, and duplicate keys."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    aliases = 0

    def size(node: yaml.Node) -> int:
        nonlocal aliases
        if len(active) >= MAX_DEPTH:
            raise _Refused(node.start_mark.line + 1, f"nested more than {MAX_DEPTH} levels deep: refused")
        key = id(node)
        if key in sizes:  # reached again: an alias (scalars too, so *name of a string counts)
            aliases += 1
            if aliases > max_aliases:
                raise _Refused(node.start_mark.line + 1, f"more than {max_aliases} alias uses (*name): refused")
            return sizes[key]
        if key in active:
            raise _Refused(node.start_mark.line + 1, "an alias refers to a node that contains it: refused")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    line = k.start_mark.line + 1
                    if (k.tag, k.value) in seen:
                        first = seen[(k.tag, k.value)]
                        name = repr(k.value) + " " if _NAME.match(k.value) else ""
                        raise _Refused(line, f"duplicate key {name}(first at line {first})")
                    seen[(k.tag, k.value)] = line
                total += size(k) + size(v)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        active.discard(key)
        if total > max_nodes:
            raise _Refused(node.start_mark.line + 1, f"expands to more than {max_nodes:,} nodes "
                                                     "through aliases: refused")
        sizes[key] = total
        return total

    size(root)


def parse(text: str | bytes, *, where: str = "<input>", max_aliases: int = MAX_ALIASES,
          max_nodes: int = MAX_NODES) -> tuple[Any, yaml.Node | None]:
    """The data of one YAML document and its node tree (for line numbers); raise :class:`YamlError`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check(node, max_aliases, max_nodes)
        return loader.construct_document(node), node
    except _Refused as exc:
        raise YamlError([f"{where}:{exc.line}: {exc.problem}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise YamlError([f"{where}{line}: not valid YAML: {_clean(exc.problem or 'unreadable')}"]) from None
    except yaml.YAMLError:
        raise YamlError([f"{where}: not valid YAML"]) from None
    except RecursionError:
        raise YamlError([f"{where}: nested too deep: refused"]) from None
    finally:
        loader.dispose()


def load_file(path: Path | str, *, max_bytes: int, root: Path | str | None = None) -> tuple[Any, yaml.Node | None]:
    """:func:`parse` a file read by :func:`herald.safefiles.read_regular` (regular, capped, under ``root``).

    Raises :class:`herald.safefiles.InputFileError` when the file is refused, :class:`YamlError`
    when its content is.
    """
    data = read_regular(path, max_bytes=max_bytes, root=root)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError([f"{path}: not UTF-8 text (byte {exc.start}): not read"]) from None
    return parse(text, where=str(path))
