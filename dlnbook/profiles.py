"""Parameter profiles: YAML files mapping chapter stems to parameter overrides.

Example (``profiles/smoke.yml``)::

    02_boundedness:
      steps: 50
      seed: 1
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import yaml

from dlnbook.chapters import ChapterError

__all__ = ["check_profile", "load_profile"]

Profile = dict[str, dict[str, Any]]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class reports an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping
)


def load_profile(path: str | Path) -> Profile:
    """Read a profile file.

    Parameters
    ----------
    path : str or Path
        YAML file whose top level maps chapter stems to mappings of parameter overrides.
        An empty file is an empty profile.

    Returns
    -------
    dict
        Chapter stem -> {parameter name: value}.

    Raises
    ------
    ChapterError
        If the file is missing, is not UTF-8 text, is not valid YAML (a key written twice
        included) or does not have that shape.
    """
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise ChapterError(f"cannot read parameter profile {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ChapterError(f"parameter profile {path} is not UTF-8 text: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ChapterError(
            f"parameter profile {path} is not valid YAML: {problem}{where}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ChapterError(f"parameter profile {path}: expected a mapping chapter -> parameters")
    profile: Profile = {}
    for chapter, overrides in data.items():
        if overrides is None:
            overrides = {}
        if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
            raise ChapterError(
                f"parameter profile {path}: entry {chapter!r} must map parameter names to values"
            )
        profile[str(chapter)] = dict(overrides)
    return profile


def check_profile(profile: Profile, chapter_names: Iterable[str], source: str = "profile") -> None:
    """Fail if a profile names a chapter that does not exist.

    Parameters
    ----------
    profile : dict
        As returned by :func:`load_profile`.
    chapter_names : iterable of str
        Stems of the existing chapters.
    source : str
        Name of the profile for the error message.

    Raises
    ------
    ChapterError
        On an unknown chapter name.
    """
    names = set(chapter_names)
    unknown = sorted(set(profile) - names)
    if unknown:
        raise ChapterError(
            f"{source} names unknown chapter(s) {', '.join(unknown)} "
            f"(chapters: {', '.join(sorted(names))})"
        )
