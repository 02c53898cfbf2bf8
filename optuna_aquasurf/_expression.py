"""Activation expressions: parse ``max(relu(x),cosh(elu(x)))`` into a tree, print it, evaluate it.

The grammar is tiny: an expression is ``x`` or ``name(expression, ...)``. Parsing is a hand-written
loop over tokens (never ``eval``), iterative so that deep nesting cannot overflow the Python stack.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from optuna_aquasurf._operators import NARY, get_operator, operator_names

#: Longest accepted expression, in characters.
MAX_LENGTH = 100_000
#: Deepest accepted nesting of calls.
MAX_DEPTH = 100

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*)|([(),]))")
_END = re.compile(r"\s*\Z")


class ExpressionError(ValueError):
    """A malformed activation expression or schema.

    Attributes
    ----------
    expression
        The text that failed to parse.
    position
        0-based character offset of the problem.
    """

    def __init__(self, problem: str, expression: str, position: int):
        self.problem = problem
        self.expression = expression
        self.position = position
        start = max(0, position - 30)
        window = expression[start : position + 30]
        shown = ("..." if start else "") + window
        caret = " " * (position - start + (3 if start else 0)) + "^"
        super().__init__(f"{problem} at position {position}:\n  {shown!s}\n  {caret}")


@dataclass(frozen=True)
class Expression:
    """A node of an expression tree: the input ``x`` (no arguments) or an operator call."""

    op: str
    args: tuple[Expression, ...] = ()

    def __str__(self) -> str:
        if not self.args:
            return self.op
        return f"{self.op}({','.join(str(a) for a in self.args)})"


X = Expression("x")

#: Checks a call while parsing: given (name, number of arguments), return an error message or None.
CallCheck = Callable[[str, int], "str | None"]


def check_operator_call(name: str, n_args: int) -> str | None:
    """The :data:`CallCheck` of activation expressions: registered operators with matching arity."""
    operator = get_operator(name)
    if operator is None:
        return unknown_name_message(name, operator_names())
    return arity_problem(name, operator.arity, n_args)


def arity_problem(name: str, arity: int | str, n_args: int) -> str | None:
    """Why ``n_args`` arguments don't suit a call of arity 1, 2 or ``"n"``, or None if they do."""
    if (n_args >= 2) if arity == NARY else (n_args == arity):
        return None
    wanted = "2 or more" if arity == NARY else str(arity)
    return f"'{name}' takes {wanted} argument{'' if wanted == '1' else 's'}, got {n_args}"


def unknown_name_message(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown operator '{name}'{hint}"


def parse(text: str, check: CallCheck = check_operator_call) -> Expression:
    """Parse an expression such as ``"add(relu(x), tanh(x))"``; whitespace is ignored.

    Raises
    ------
    ExpressionError
        For any malformed input, naming the problem and its position.
    """
    if not isinstance(text, str):
        raise TypeError(f"an expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is {len(text):,} characters long; the limit is {MAX_LENGTH:,}",
            text[:60],
            0,
        )
    tokens = _tokenize(text)
    frames: list[tuple[str, int, list[Expression]]] = []  # open calls: name, position, arguments
    i = 0
    while True:
        kind, value, pos = tokens[i]
        if kind != "name":
            raise ExpressionError(
                f"expected an operator or 'x', found {_describe(kind, value)}", text, pos
            )
        i += 1
        if tokens[i][1] == "(":
            if value == "x":
                raise ExpressionError("'x' is the input, not an operator", text, pos)
            if len(frames) == MAX_DEPTH:
                raise ExpressionError(f"nesting deeper than {MAX_DEPTH} calls", text, pos)
            frames.append((value, pos, []))
            i += 1
            continue
        if value != "x":
            problem = check(value, 0) or f"'{value}' needs arguments, as in {value}(x)"
            raise ExpressionError(problem, text, pos)
        node = X
        while True:  # close as many calls as the following ')' tokens end
            if not frames:
                kind, value, pos = tokens[i]
                if kind != "end":
                    raise ExpressionError(
                        f"unexpected {_describe(kind, value)} after the end", text, pos
                    )
                return node
            frames[-1][2].append(node)
            kind, value, pos = tokens[i]
            i += 1
            if value == ",":
                break
            if value != ")":
                raise ExpressionError(
                    f"expected ',' or ')', found {_describe(kind, value)}", text, pos
                )
            name, start, args = frames.pop()
            problem = check(name, len(args))
            if problem:
                raise ExpressionError(problem, text, start)
            node = Expression(name, tuple(args))


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens = []
    pos = 0
    while not _END.match(text, pos):
        match = _TOKEN.match(text, pos)
        if match is None:
            bad = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise ExpressionError(f"unexpected character {text[bad]!r}", text, bad)
        name, punctuation = match.groups()
        start = match.start(1) if name else match.start(2)
        tokens.append(("name", name, start) if name else ("punct", punctuation, start))
        pos = match.end()
    tokens.append(("end", "", len(text)))
    return tokens


def _describe(kind: str, value: str) -> str:
    return "the end of the expression" if kind == "end" else f"'{value}'"


def canonical(text: str) -> str:
    """The canonical spelling of an expression: ``"add( relu(x), x )"`` -> ``"add(relu(x),x)"``."""
    return str(parse(text))


def evaluate(
    node: Expression, x: torch.Tensor, memo: dict[Expression, torch.Tensor] | None = None
) -> torch.Tensor:
    """Apply the expression elementwise to ``x``.

    ``memo``, if given, keeps the value of every sub-expression so that expressions evaluated on
    the same ``x`` compute what they share once.
    """
    if not node.args:
        return x
    if memo is not None and node in memo:
        return memo[node]
    operator = get_operator(node.op)
    if operator is None:
        raise ExpressionError(unknown_name_message(node.op, operator_names()), str(node), 0)
    value = operator.function(*(evaluate(arg, x, memo) for arg in node.args))
    if memo is not None:
        memo[node] = value
    return value
