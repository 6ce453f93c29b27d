"""Jinja2 rendering from the repository's top-level ``templates/`` directory (the only place the agent renders from).

Lookup order: ``$ARCTIC_TEMPLATES_DIR``; the ``templates/`` directory of the source tree this package lives in
(editable installs, tests); ``<sys.prefix>/share/arctic/templates`` (installed wheels, see setup.cfg data_files).
Undefined variables are errors: a typo in a template must fail loudly, not render an empty rule.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

ENV_VAR = "ARCTIC_TEMPLATES_DIR"


def template_dir() -> Path:
    candidates = []
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates.append(Path(__file__).resolve().parents[3] / "templates")
    candidates.append(Path(sys.prefix) / "share" / "arctic" / "templates")
    for path in candidates:
        if (path / "nftables.nft.j2").is_file():
            return path
    raise FileNotFoundError(
        "Arctic templates not found; looked in " + ", ".join(str(p) for p in candidates)
        + f" (set {ENV_VAR} to the directory holding nftables.nft.j2)")


@functools.lru_cache(maxsize=4)
def _environment(directory: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(name: str, **context: Any) -> str:
    return _environment(str(template_dir())).get_template(name).render(**context)


def macro(name: str, macro_name: str, **context: Any) -> Callable[..., str]:
    """A macro of template ``name``, callable from Python, so a piece of kernel syntax needed on its own keeps its
    one definition in the template. The template's top level runs with ``context`` and must render nothing then."""
    return getattr(_environment(str(template_dir())).get_template(name).make_module(vars=context), macro_name)
