"""The user documentation against the code: README.md and docs/*.md.

* every ``Settings`` field has one row in docs/configuration.md (its ``STREAMREC_*``
  variable, backquoted, in the first cell) and the row's default is the field's;
* the README stays short enough to read in five minutes (at most 200 lines);
* no page points outside the repository (``../``, absolute machine paths) or names
  internal work items (``issue 12``, ``#12``);
* every relative link resolves: the file exists, and an ``#anchor`` names a heading.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from streamrec.settings import ENV_PREFIX, NOT_SETTINGS, Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
README_MAX_LINES = 200


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- docs/configuration.md ----------------------------------------------------------

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_VARIABLE = re.compile(r"`(STREAMREC_[A-Z0-9_]+)`")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text`` (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in _CELL_SPLIT.split(line)[1:-1]]
        if cells and not all(set(c) <= set("-: ") for c in cells):
            rows.append(cells)
    return rows


def documented_defaults() -> dict[str, list[str]]:
    """Variable -> the default cell of each row whose first cell is that variable alone."""
    found: dict[str, list[str]] = {}
    for cells in table_rows(CONFIGURATION.read_text()):
        m = _VARIABLE.fullmatch(cells[0])
        if m and len(cells) >= 2:
            found.setdefault(m[1], []).append(cells[1])
    return found


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def normalised(value: object) -> str:
    """A setting's default as the documentation writes it: ``unset`` for None, ``empty`` for
    the empty string, ``true``/``false``, numbers without a trailing ``.0``."""
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return _number(value)
    return str(value) or "empty"


def documented(cell: str) -> str:
    """The default a table cell states: its first backquoted value, else its first word
    (``unset …``, ``empty``), numbers and booleans written as :func:`normalised` does."""
    m = re.match(r"`([^`]*)`", cell)
    token = (m[1] if m else (cell.split() or [""])[0]).strip()
    if _NUMBER.fullmatch(token):
        return _number(float(token))
    if token.lower() in ("true", "false"):
        return token.lower()
    return token


def variable(field: str) -> str:
    return ENV_PREFIX + field.upper()


def test_every_setting_has_exactly_one_row() -> None:
    rows = documented_defaults()
    missing = sorted(variable(f) for f in Settings.model_fields if variable(f) not in rows)
    assert not missing, f"settings without a row in docs/configuration.md: {missing}"
    twice = sorted(v for v, cells in rows.items() if len(cells) > 1)
    assert not twice, f"variables with more than one row: {twice}"


def test_no_row_names_a_variable_the_code_does_not_read() -> None:
    known = {variable(f) for f in Settings.model_fields} | NOT_SETTINGS
    stale = sorted(set(documented_defaults()) - known)
    assert not stale, f"docs/configuration.md documents variables that are not settings: {stale}"


def test_the_non_settings_variables_are_documented() -> None:
    assert NOT_SETTINGS <= set(documented_defaults())


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_documented_default_is_the_code_default(field: str) -> None:
    cells = documented_defaults().get(variable(field))
    if not cells:
        pytest.fail(f"{variable(field)} has no row in docs/configuration.md")
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    assert documented(cells[0]) == normalised(default), (
        f"{variable(field)}: docs/configuration.md says {cells[0]!r}, the code's default is "
        f"{normalised(default)!r}")


def test_default_normalisation() -> None:
    assert documented("`60`") == normalised(60.0) == "60"
    assert documented("`0.005`") == normalised(0.005)
    assert documented("`-1` (off)") == normalised(-1)
    assert documented("unset (`{host}-{pid}`)") == normalised(None)
    assert documented("empty") == normalised("")
    assert documented("`false`") == normalised(False)
    assert documented("`redis://127.0.0.1:6379/0`") == normalised(SecretStr("redis://127.0.0.1:6379/0"))
    assert documented("`0.0.0.0`") == normalised("0.0.0.0")


# --- every page ---------------------------------------------------------------------

def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it to {README_MAX_LINES}"


_OUTSIDE = re.compile(r"\.\./|(?<![\w.~-])/(work|opt)/")
_WORK_ITEM = re.compile(r"\bissues?\s+#?\d+\b|(?<![\w&/#])#\d+\b", re.IGNORECASE)


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_no_path_outside_the_repository(page: Path) -> None:
    bad = [f"{n}: {line.strip()}" for n, line in enumerate(page.read_text().splitlines(), 1)
           if _OUTSIDE.search(line)]
    assert not bad, f"{page_id(page)} points outside the repository:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_no_internal_work_item_references(page: Path) -> None:
    bad = [f"{n}: {line.strip()}" for n, line in enumerate(page.read_text().splitlines(), 1)
           if _WORK_ITEM.search(line)]
    assert not bad, f"{page_id(page)} names work items:\n" + "\n".join(bad)


_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks (a ``# comment`` there is no heading)."""
    return _FENCE.sub("", text)


def anchors(path: Path) -> set[str]:
    """The heading anchors GitHub gives ``path``'s headings (duplicates get ``-1``, ``-2``…)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m[1].lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(prose(page.read_text())):
        if _SCHEME.match(target):
            continue  # http(s), mailto: not ours to check
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
        elif ROOT not in (dest, *dest.parents):
            broken.append(f"{target}: outside the repository")
    assert not broken, f"{page_id(page)} has broken links:\n" + "\n".join(broken)


def test_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve()
              for t in _LINK.findall(prose(README.read_text())) if not _SCHEME.match(t)}
    unlinked = [page_id(p) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README.md's table of contents misses {unlinked}"
