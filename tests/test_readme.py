"""Every ```python block of README.md runs.

How the blocks run:

- **In sequence per section.** The blocks of one level-2 section (``## ...``, its ``###``
  subsections included) share one namespace and one working directory (a fresh temporary
  folder), in README order, as a reader following the section runs them: a block may use what
  the blocks before it in its section define (the confirm block uses the search block's
  ``study``). Each block is one test, named by its README line and first line; the blocks
  before it in its section run first, once per session (a block run alone with ``-k`` runs
  them as its set-up).
- **Tracebacks point at the README**: a block is compiled as ``README.md`` with its own line
  numbers, so a failure shows the README line that raised.
- **Placeholders** the test machine lacks are replaced first, line for line, by
  :data:`SUBSTITUTIONS` (a PostgreSQL server becomes a SQLite file, a shared disk the working
  directory, and ``n_trials``/``max_trials`` shrink); in the block that contains one of its keys,
  :data:`BLOCK_SUBSTITUTIONS` take the place of those of the same pattern. Every substitution
  must apply somewhere.
- **Slow blocks**: a block after ``<!-- slow: REASON -->`` is marked ``slow`` (the slow job runs
  it). It runs in a copy of its section's namespace, so later blocks never depend on it.
- **Blocks not run**: a block after ``<!-- not run: REASON -->`` is not run. The reason must name
  the test under ``tests/`` that runs the same code, and at most :data:`MAX_NOT_RUN` blocks may be
  such exceptions.
- **Operators**: each section has its own registry of operators (the built-in ones to start),
  so that ``register_operator`` in a block neither collides with nor leaks into other tests.

Nothing depends on a seeded search's luck: the blocks print their results, they do not assert
them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from optuna_aquasurf import _operators

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: (pattern, replacement, why): applied to every block, each match within one line.
SUBSTITUTIONS = [
    (
        r"postgresql\+psycopg://user:password@db-host/aquasurf",
        "sqlite:///aquasurf.db",
        "no PostgreSQL server: a SQLite file in the working directory",
    ),
    (r"/shared/aquasurf\.journal", "aquasurf.journal", "no shared disk: the working directory"),
    (r"\bn_trials=\d+", "n_trials=10", "the 8 baselines, then surrogate picks"),
    (r"\bmax_trials=\d+", "max_trials=4", "a short race"),
]
#: key: substitutions for the one block that contains key, in place of those of the same pattern.
BLOCK_SUBSTITUTIONS = {
    "FisherProbe(build_model, images[:32], labels[:32])": [
        (
            r"\bn_trials=\d+",
            "n_trials=1",
            "a baseline only: the first surrogate pick computes the Fisher features of resnet18 "
            "for 2,918 functions, minutes on a CPU (tests/test_fisher_probe.py, "
            "tests/test_cli_timm.py cover them)",
        )
    ],
}
#: The most blocks that may be left unrun.
MAX_NOT_RUN = 1
NOT_RUN = "<!-- not run:"
SLOW = "<!-- slow:"


@dataclass(frozen=True)
class Block:
    """One ```python block: its section, the README line of its first code line, its code and
    the HTML comment on the line before its fence (or "")."""

    section: str
    line: int
    code: str
    comment: str

    @property
    def id(self) -> str:
        first = next(line for line in self.code.splitlines() if line.strip())
        return f"L{self.line}-" + re.sub(r"[^A-Za-z0-9_.]+", "_", first.strip())[:48]

    @property
    def slow(self) -> bool:
        return self.comment.startswith(SLOW)

    @property
    def runs(self) -> bool:
        return not self.comment.startswith(NOT_RUN)


def readme_blocks(text: str) -> list[Block]:
    """The ```python blocks of ``text``, in order."""
    blocks: list[Block] = []
    section = "(top)"
    fence: str | None = None  # the language of the open fence
    start = 0
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if fence is None:
            if line.startswith("## "):
                section = line[3:].strip()
            elif line.startswith("```"):
                fence, start = line[3:].strip(), number
        elif line.strip() == "```":
            if fence == "python":
                before = lines[start - 2].strip() if start >= 2 else ""
                comment = before if before.startswith("<!--") else ""
                code = "\n".join(lines[start : number - 1]) + "\n"
                blocks.append(Block(section, start + 1, code, comment))
            fence = None
    assert fence is None, f"README.md: the fence at line {start} is never closed"
    return blocks


BLOCKS = readme_blocks(README.read_text())


def substituted(block: Block) -> str:
    """The block's code with its placeholders replaced (the same number of lines)."""
    code = block.code
    substitutions = {pattern: replacement for pattern, replacement, _ in SUBSTITUTIONS}
    for key, overrides in BLOCK_SUBSTITUTIONS.items():
        if key in code:
            substitutions.update({pattern: replacement for pattern, replacement, _ in overrides})
    for pattern, replacement in substitutions.items():
        code = re.sub(pattern, replacement, code)
    assert code.count("\n") == block.code.count("\n")
    return code


@dataclass
class Section:
    """What the blocks of one section have run in: their namespace, folder and operators."""

    folder: Path
    namespace: dict = field(default_factory=lambda: {"__name__": "__readme__"})
    operators: dict = field(default_factory=lambda: {op.name: op for op in _operators._BUILTIN})
    done: set[int] = field(default_factory=set)
    failed: int | None = None


_SECTIONS: dict[str, Section] = {}


def run_block(block: Block, section: Section, namespace: dict) -> None:
    """Execute ``block`` in ``namespace``, with the section's operators and in its folder."""
    code = compile("\n" * (block.line - 1) + substituted(block), str(README), "exec")
    registry = _operators._REGISTRY
    saved = dict(registry)
    registry.clear()
    registry.update(section.operators)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(section.folder)
            exec(code, namespace)
    finally:
        section.operators = dict(registry)
        registry.clear()
        registry.update(saved)


def _param(block: Block):
    marks = [pytest.mark.slow] if block.slow else []
    return pytest.param(block, id=block.id, marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS if b.runs])
def test_block_runs(block: Block, tmp_path_factory):
    slug = re.sub(r"[^a-z0-9]+", "_", block.section.lower()).strip("_")[:30]
    section = _SECTIONS.setdefault(block.section, Section(tmp_path_factory.mktemp(slug)))
    if section.failed is not None:
        pytest.fail(f"README.md:{section.failed}, a block before this one in its section, failed")
    for earlier in BLOCKS:
        if earlier is block:
            break
        if earlier.section != block.section or not earlier.runs or earlier.slow:
            continue
        if earlier.line not in section.done:
            try:
                run_block(earlier, section, section.namespace)
            except BaseException:
                section.failed = earlier.line
                raise
            section.done.add(earlier.line)
    namespace = dict(section.namespace) if block.slow else section.namespace
    try:
        run_block(block, section, namespace)
    except BaseException:
        section.failed = block.line
        raise
    section.done.add(block.line)


def test_the_readme_has_python_blocks_in_each_part():
    sections = {b.section for b in BLOCKS}
    assert {"Your own Optuna script", "Your own model and data", "Reference"} <= sections
    assert len(BLOCKS) >= 10


def test_blocks_not_run_are_few_and_say_which_test_runs_their_code():
    not_run = [b for b in BLOCKS if not b.runs]
    assert len(not_run) <= MAX_NOT_RUN, [b.id for b in not_run]
    for block in not_run:
        reason = block.comment[len(NOT_RUN) :].removesuffix("-->").strip()
        assert reason, f"README.md:{block.line}: a block not run must say why"
        tests = re.findall(r"tests/test_\w+\.py", reason)
        assert tests, f"README.md:{block.line}: name the test that runs this code: {reason!r}"
        for test in tests:
            assert (ROOT / test).is_file(), f"README.md:{block.line}: no {test}"
        for name in re.findall(r"^def (\w+)\(", block.code, flags=re.M):
            covered = [ROOT / path for path in re.findall(r"\b(?:examples|tests)/\w+\.py", reason)]
            assert any(f"def {name}(" in path.read_text() for path in covered), (
                f"README.md:{block.line}: {name}() is defined in none of {reason!r}"
            )


def test_slow_blocks_say_why():
    for block in BLOCKS:
        if block.slow:
            assert block.comment[len(SLOW) :].removesuffix("-->").strip(), block.id


def test_every_substitution_applies():
    code = [b.code for b in BLOCKS if b.runs]
    for pattern, _, why in SUBSTITUTIONS:
        assert any(re.search(pattern, c) for c in code), f"{pattern!r} ({why}) matches no block"
    for key, substitutions in BLOCK_SUBSTITUTIONS.items():
        matching = [c for c in code if key in c]
        assert len(matching) == 1, f"{key!r} is in {len(matching)} blocks, not 1"
        for pattern, _, why in substitutions:
            assert re.search(pattern, matching[0]), f"{pattern!r} ({why}) is not in its block"
