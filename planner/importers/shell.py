"""Words of a launch script or an arguments file, the way a shell would pass them on.

Launch scripts differ, but most follow one shape: variables holding groups of flags
(`GPT_ARGS="--num-layers 24 ..."`, `MODEL_ARGS=( --tp 8 ... )`), then one command that runs
torchrun (or python -m torch.distributed.run, deepspeed, srun ...) on the training script with
those variables. `script_words` joins continued lines, drops comments, expands the variables the
script itself assigns (`$X`, `${X}`, `${X[@]}`, and `${X:-default}`), and splits into words with
shlex. Anything it cannot resolve (command substitution, variables from the environment) stays
as written and shows up among the unknown flags, not silently dropped.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

_ASSIGN = re.compile(r"^(?:export\s+|declare\s+(?:-\w+\s+)*|local\s+)?([A-Za-z_]\w*)=(.*)$",
                     re.S)
_VAR = re.compile(r"\$\{([A-Za-z_]\w*)(?:\[@\]|\[\*\])?(?::?-([^}]*))?\}|\$([A-Za-z_]\w*)")


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined, comments and blank lines dropped; a
    multi-line array assignment `X=( ... )` becomes one line."""
    joined = re.sub(r"\\\n", " ", text)
    out: list[str] = []
    pending = ""
    for raw in joined.splitlines():
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if pending:
            pending += " " + line
            if ")" in line:
                out.append(pending)
                pending = ""
            continue
        match = _ASSIGN.match(line)
        if match and match.group(2).startswith("(") and ")" not in match.group(2):
            pending = line
            continue
        out.append(line)
    if pending:
        out.append(pending)
    return out


def _strip_comment(line: str) -> str:
    """Drop a `#` comment that starts a word (not one inside quotes or `${#x}`)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t;"):
            return line[:i]
    return line


def _expand(text: str, variables: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in variables:
            return variables[name]
        if m.group(2) is not None:
            return m.group(2)
        return m.group(0)

    # "${ARR[@]}" expands to the array's words, not one word
    text = re.sub(r'"(\$\{[A-Za-z_]\w*\[[@*]\]\})"', r"\1", text)
    for _ in range(5):  # variables made of variables
        expanded = _VAR.sub(sub, text)
        if expanded == text:
            break
        text = expanded
    return text


_CAT = re.compile(r"\$\(\s*cat\s+\"?([^\"()]+?)\"?\s*\)")


def _inline_cat(text: str, read: Callable[[str], str | None]) -> str:
    """Replace `$(cat FILE)` by FILE's content where `read` finds it (the launch scripts
    planner emit writes read their flags that way)."""

    def sub(m: re.Match[str]) -> str:
        content = read(m.group(1).strip())
        return m.group(0) if content is None else " ".join(content.split())

    return _CAT.sub(sub, text)


def script_words(text: str, read: Callable[[str], str | None] = lambda name: None
                 ) -> tuple[list[list[str]], dict[str, str]]:
    """(the words of each command line after expansion, the variables assigned). `read`
    resolves the file of a `$(cat FILE)` (None: leave it as written)."""
    text = _inline_cat(text, read)
    variables: dict[str, str] = {}
    commands: list[list[str]] = []
    for line in logical_lines(text):
        match = _ASSIGN.match(line)
        while match and not _is_array(match.group(2).strip()):
            # `A=1 B=2 torchrun ...`: assignments that prefix a command on the same line
            raw = _split(match.group(2).strip())
            if len(raw) < 2:
                break
            variables[match.group(1)] = _expand(raw[0], variables)
            line = match.group(2).strip()[len(_first_word(match.group(2).strip())):].strip()
            match = _ASSIGN.match(line)
        if match:
            name, value = match.group(1), match.group(2).strip()
            array = _is_array(value)
            value = _expand(value[1:-1] if array else value, variables)
            try:
                words = shlex.split(value)
            except ValueError:
                words = value.split()
            # an array keeps its words; a string is split again where it is used unquoted
            variables[name] = (" ".join(shlex.quote(w) for w in words)
                               if array or len(words) != 1 else words[0])
            continue
        try:
            commands.append(shlex.split(_expand(line, variables)))
        except ValueError:
            commands.append(_expand(line, variables).split())
    return commands, variables


def _is_array(value: str) -> bool:
    return value.startswith("(") and value.endswith(")")


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


_WORD = re.compile(r"""(?:[^\s"']|"[^"]*"|'[^']*')+""")


def _first_word(text: str) -> str:
    """The first shell word of `text` as written (quotes included)."""
    match = _WORD.match(text)
    return match.group(0) if match else text
