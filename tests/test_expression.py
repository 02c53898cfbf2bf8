import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optuna_aquasurf import ALL_BINARY, ALL_NARY, ALL_UNARY, Expression, ExpressionError, parse
from optuna_aquasurf._expression import MAX_DEPTH


@pytest.mark.parametrize(
    "text",
    [
        "add(relu(x),tanh(x))",
        "sum_n(abs(x),swish(x),sigmoid(x))",
        "max(relu(x),cosh(elu(x)))",
        "x",
        "prod_n(x,x,x,x,x)",
        "div(bessel_i0e(hard_sigmoid(x)),log_sigmoid(leakyrelu(x)))",
    ],
)
def test_round_trip_is_canonical(text):
    assert str(parse(text)) == text


def test_whitespace_is_ignored():
    assert str(parse("  add( relu( x ) ,\n\ttanh(x) ) ")) == "add(relu(x),tanh(x))"


def test_tree_structure():
    tree = parse("add(relu(x),x)")
    assert tree == Expression("add", (Expression("relu", (Expression("x"),)), Expression("x")))


def test_deep_nesting_within_the_limit_parses():
    text = "tanh(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1)
    assert str(parse(text)) == text


@pytest.mark.parametrize(
    "text, problem, position",
    [
        ("relu(", "expected an operator or 'x', found the end", 5),
        ("foo(x)", "unknown operator 'foo'", 0),
        ("add(x)", "'add' takes 2 arguments, got 1", 0),
        ("relu(x,x)", "'relu' takes 1 argument, got 2", 0),
        ("sum_n(x)", "'sum_n' takes 2 or more arguments, got 1", 0),
        ("", "expected an operator or 'x', found the end", 0),
        ("relu(x))", "unexpected ')' after the end", 7),
        ("relu(x) tanh(x)", "unexpected 'tanh' after the end", 8),
        ("relu(é)", "unexpected character 'é'", 5),
        ("x(x)", "'x' is the input", 0),
        ("relu", "'relu' takes 1 argument, got 0", 0),
        ("add(x;x)", "unexpected character ';'", 5),
        ("add(x x)", "expected ',' or ')', found 'x'", 6),
        ("relu(y)", "unknown operator 'y'", 5),
    ],
)
def test_malformed_expressions_name_problem_and_position(text, problem, position):
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert problem in str(info.value)
    assert info.value.position == position
    assert f"at position {position}" in str(info.value)


def test_typo_suggests_the_close_name():
    with pytest.raises(ExpressionError, match="did you mean 'swish'"):
        parse("swsh(x)")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000, 100_000])
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(depth):
    text = "relu(" * depth + "x" + ")" * depth
    with pytest.raises(ExpressionError, match="nesting deeper than|characters long"):
        parse(text)


def test_huge_string_is_rejected_quickly():
    with pytest.raises(ExpressionError, match="characters long"):
        parse("a" * 10 * 2**20)


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        parse(42)


OPERATORS = (
    [(n, 1) for n in ALL_UNARY] + [(n, 2) for n in ALL_BINARY] + [(n, "n") for n in ALL_NARY]
)


def trees():
    def extend(children):
        def call(pair):
            (name, arity), args = pair
            return Expression(name, tuple(args))

        unary = st.tuples(
            st.sampled_from([o for o in OPERATORS if o[1] == 1]),
            st.lists(children, min_size=1, max_size=1),
        )
        binary = st.tuples(
            st.sampled_from([o for o in OPERATORS if o[1] == 2]),
            st.lists(children, min_size=2, max_size=2),
        )
        nary = st.tuples(
            st.sampled_from([o for o in OPERATORS if o[1] == "n"]),
            st.lists(children, min_size=2, max_size=4),
        )
        return st.one_of(unary, binary, nary).map(call)

    return st.recursive(st.just(Expression("x")), extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(trees())
def test_random_valid_trees_print_and_reparse(tree):
    assert parse(str(tree)) == tree


ALPHABET = st.sampled_from(list("xrelutanhd(),_ -1é\t") + ["relu", "add", "sum_n", "x", "(", ")"])


@settings(max_examples=500, deadline=None)
@given(st.lists(ALPHABET, max_size=30).map("".join))
def test_random_strings_raise_only_the_documented_error(text):
    try:
        tree = parse(text)
    except ExpressionError:
        return
    assert parse(str(tree)) == tree


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_unicode_raises_only_the_documented_error(text):
    try:
        parse(text)
    except ExpressionError:
        pass
