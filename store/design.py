"""Builds the ``_design/certstore`` document from the files under ``design_docs/certstore/``.

Layout: ``validate_doc_update.js``, ``views/<view>/map.js`` (+ optional ``reduce.js``, which holds a
JavaScript function or a built-in reducer such as ``_count``) and ``filters/<filter>.js``. Each file
holds one function expression starting with ``function``. The built document carries
``certstore_version``, a SHA-256 over its content, so ``certstore init`` updates the database's copy
only when the files changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from store import ids
from store.errors import DesignDocError

DESIGN_DOCS_DIR = Path(__file__).resolve().parent.parent / "design_docs"
VERSION_FIELD = "certstore_version"


def _read(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DesignDocError(f"cannot read design document file {path}: {exc}", path=str(path)) from exc
    if not text:
        raise DesignDocError(f"design document file {path} is empty", path=str(path))
    return text


def _function(path: Path) -> str:
    # Some evaluators prepend "return " to the source: anything before "function" would break it.
    text = _read(path)
    if not text.startswith("function"):
        raise DesignDocError(f'{path} must start with "function" (no comment before it)', path=str(path))
    return text


def design_version(doc: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a design document's content: everything but ``_id``, ``_rev`` and the version."""
    content = {key: value for key, value in doc.items() if key not in ("_id", "_rev", VERSION_FIELD)}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_design_doc(root: Path = DESIGN_DOCS_DIR) -> dict[str, Any]:
    """The ``_design/certstore`` document built from ``root/certstore``, with its ``certstore_version``."""
    base = root / "certstore"
    views: dict[str, dict[str, str]] = {}
    views_dir = base / "views"
    if not views_dir.is_dir():
        raise DesignDocError(f"no views directory at {views_dir}", path=str(views_dir))
    for view_dir in sorted(path for path in views_dir.iterdir() if path.is_dir()):
        view = {"map": _function(view_dir / "map.js")}
        reduce_file = view_dir / "reduce.js"
        if reduce_file.exists():
            reduce = _read(reduce_file)
            view["reduce"] = reduce if reduce.startswith("_") else _function(reduce_file)
        views[view_dir.name] = view
    filters_dir = base / "filters"
    filters = {path.stem: _function(path) for path in sorted(filters_dir.glob("*.js"))}
    doc: dict[str, Any] = {
        "_id": ids.DESIGN,
        "language": "javascript",
        "validate_doc_update": _function(base / "validate_doc_update.js"),
        "views": views,
        "filters": filters,
    }
    doc[VERSION_FIELD] = design_version(doc)
    return doc


def needs_update(stored: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether the database's design document (None when absent) differs from ``wanted``."""
    # Recomputed rather than read from the stored field, so a hand edit in Fauxton is noticed too.
    return stored is None or design_version(stored) != wanted[VERSION_FIELD]
