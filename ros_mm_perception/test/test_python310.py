"""Humble runs Python 3.10: every module must parse with 3.10's grammar and avoid stdlib names
added later.

``ast.parse(..., feature_version=(3, 10))`` rejects newer syntax the running parser knows
(``except*``, ``type`` aliases, generic classes); f-strings that reuse their own quotes (3.12) are
found with the tokenizer where it reports f-string parts; 3.11+ standard-library names are matched
in imports and attribute accesses. Cheap, not complete: colcon builds on Humble remain the real
check.
"""

import ast
import io
import pathlib
import sys
import tokenize

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = sorted(p for p in REPO.rglob("*.py")
                 if not {".venv", "build", "install", "log",
                         "__pycache__"} & set(p.relative_to(REPO).parts))

NEWER_STDLIB = {
    "tomllib": None, "wsgiref.types": None,  # whole modules (3.11)
    "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type",
               "dataclass_transform", "Required", "NotRequired", "TypeVarTuple", "Unpack",
               "get_overloads", "clear_overloads", "override", "TypeAliasType"},
    "enum": {"StrEnum", "ReprEnum", "EnumCheck", "verify", "member", "nonmember", "global_enum",
             "show_flag_values"},
    "datetime": {"UTC"},
    "itertools": {"batched"},
    "asyncio": {"TaskGroup", "timeout", "timeout_at", "Runner", "Barrier"},
    "contextlib": {"chdir"},
    "hashlib": {"file_digest"},
    "operator": {"call"},
    "math": {"cbrt", "exp2"},
    "logging": {"getLevelNamesMapping"},
}
NEWER_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}


def newer_stdlib_uses(source: str):
    """``module.name`` strings of 3.11+ standard-library uses in ``source``."""
    found, aliases = [], {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in NEWER_STDLIB and NEWER_STDLIB[alias.name] is None:
                    found.append(alias.name)
                aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in NEWER_STDLIB and NEWER_STDLIB[node.module] is None:
                found.append(node.module)
            found += [f"{node.module}.{a.name}"
                      for a in node.names if a.name in (NEWER_STDLIB.get(node.module) or ())]
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            found.append(node.id)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            if node.attr in (NEWER_STDLIB.get(module) or ()):
                found.append(f"{module}.{node.attr}")
    return found


def fstring_quote_reuse(source: str):
    """Lines of f-strings that reuse their own quote inside a replacement field (valid from 3.12
    only)."""
    start = getattr(tokenize, "FSTRING_START", None)
    # before 3.12 such f-strings do not even tokenize, so ast.parse has rejected them
    if start is None:
        return []
    lines, quotes = [], []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == start:
            quote = (
                tok.string.lstrip("rRfFbB")[:3]
                if tok.string.lstrip("rRfFbB")[:3] in ('"""', "'''")
                else tok.string.lstrip("rRfFbB")[:1]
            )
            if quotes and quote == quotes[-1]:
                lines.append(tok.start[0])
            quotes.append(quote)
        elif tok.type == tokenize.FSTRING_END:
            quotes.pop()
        elif tok.type == tokenize.STRING and quotes:
            body = tok.string.lstrip("rRbBuU")
            if body.startswith(quotes[-1]):
                lines.append(tok.start[0])
    return lines


def test_the_checks_catch_what_they_look_for():
    assert newer_stdlib_uses(
        "import tomllib\nfrom typing import Self\nimport datetime as dt\nx "
        "= dt.UTC\nraise ExceptionGroup('a', [])\n"
    ) == ["tomllib", "typing.Self", "ExceptionGroup", "datetime.UTC"]
    assert not newer_stdlib_uses("from typing import Optional\nimport datetime\nx = "
                                 "datetime.timezone.utc\n")
    with pytest.raises(SyntaxError):
        ast.parse("try:\n    pass\nexcept* ValueError:\n    pass\n", feature_version=(3, 10))
    if sys.version_info >= (3, 12):
        assert fstring_quote_reuse('x = f"{d["k"]}"\n') == [1]
        assert not fstring_quote_reuse("x = f\"{d['k']}\"\n")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_module_is_python_3_10(path):
    source = path.read_text()
    ast.parse(source, filename=str(path), feature_version=(3, 10))
    assert not newer_stdlib_uses(source), f"{path.name} uses 3.11+ standard library names"
    assert not fstring_quote_reuse(
        source
    ), f"{path.name}: f-strings reuse their quotes (3.12+) on these lines"
