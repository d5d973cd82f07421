"""One `ast.parse` for every test that reads the project's code.

CPython 3.11.7 can fail `ast.parse` with ``SystemError: AST constructor recursion depth
mismatch`` once an earlier test in the same process recursed deeply (the hostile JSON nesting
tests do); the same source parses in a fresh interpreter, so that is the fallback.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys

_PARSE_IN_FRESH_INTERPRETER = (
    "import ast, pickle, sys; source = sys.stdin.read(); "
    "sys.stdout.buffer.write(pickle.dumps(ast.parse(source, sys.argv[1])))"
)


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    try:
        return ast.parse(source, filename=filename)
    except SystemError:
        done = subprocess.run(
            [sys.executable, "-c", _PARSE_IN_FRESH_INTERPRETER, filename],
            input=source.encode(),
            capture_output=True,
            check=True,
        )
        tree: ast.Module = pickle.loads(done.stdout)
        return tree
