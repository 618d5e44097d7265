"""The documentation cannot rot silently: its links resolve and the commands it shows exist.

README.md, docs/*.md and weights/README.md are read as text (offline, no subprocess). Every
relative link and image must name a file or folder of the checkout, and a heading of it when
it carries a ``#anchor`` (GitHub's heading slugs). Every ``srgan ...`` command line in their
shell code blocks and inline code (also ``uv run srgan``, ``python -m srgan_cli``,
``torchrun ... -m srgan_cli``) may use only the subcommands and options that the command's
``--help`` lists, read from the click objects of ``srgan_cli.cli``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import click

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SOURCE = re.compile(r"<(?:img|a)\b[^>]*\s(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
INLINE_CODE = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.DOTALL)  # within a paragraph
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")
SHELL_OPERATORS = set("();<>|&")


def doc_files(root: Path = ROOT) -> list[Path]:
    """The documents checked: the front page, the manual and the model cards."""
    manual = sorted((root / "docs").glob("*.md"))
    return [root / "README.md", *manual, root / "weights" / "README.md"]


def split_fences(text: str) -> tuple[list[tuple[int, str]], list[tuple[str, int, list[str]]]]:
    """Split Markdown into prose lines (number, text) and fenced blocks (language, first line
    number, lines), so that links and headings are only read outside code."""
    prose: list[tuple[int, str]] = []
    blocks: list[tuple[str, int, list[str]]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            blocks.append((match.group(2).lower(), number + 1, []))
        elif fence is not None and is_closing_fence(line.strip(), fence):
            fence = None
        elif fence is not None:
            blocks[-1][2].append(line)
        else:
            prose.append((number, line))
    return prose, blocks


def prose_text(text: str) -> str:
    """The document with its fenced blocks blanked out, line numbers kept."""
    lines = [""] * len(text.splitlines())
    for number, line in split_fences(text)[0]:
        lines[number - 1] = line
    return "\n".join(lines)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def is_closing_fence(stripped: str, fence: str) -> bool:
    """Whether a line closes a block opened by ``fence``: the same character, as many or more."""
    return set(stripped) == {fence[0]} and len(stripped) >= len(fence)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text without Markdown marks, lower-cased, all
    but letters, digits, '_', '-' and spaces dropped, spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in split_fences(path.read_text(encoding="utf-8"))[0]:
        match = HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link or image of ``path`` that names no file, or no heading."""
    problems = []
    root = root.resolve()
    prose = prose_text(path.read_text(encoding="utf-8"))
    plain = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)
    matches = sorted([*LINK.finditer(plain), *HTML_SOURCE.finditer(plain)], key=re.Match.start)
    for match in matches:
        target, number = match.group(1), line_of(plain, match.start())
        if SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{path.resolve().relative_to(root)}:{number}: {target}"
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path.resolve()
        if not dest.exists() or not dest.is_relative_to(root):
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(root)}")
    return problems


def command_lines(path: Path) -> list[tuple[int, str]]:
    """Shell lines of the fenced shell blocks (``\\`` continuations joined) and inline code
    spans that start with ``srgan ``, each with its line number."""
    lines = []
    blocks = split_fences(path.read_text(encoding="utf-8"))[1]
    for language, first, block in blocks:
        if language not in SHELL_LANGUAGES:
            continue
        pending, start = "", first
        for offset, line in enumerate(block):
            if not pending:
                start = first + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            lines.append((start, pending + line))
            pending = ""
        if pending:
            lines.append((start, pending))
    text = prose_text(path.read_text(encoding="utf-8"))
    for match in INLINE_CODE.finditer(text):
        code = " ".join(match.group(2).split())
        if code.startswith("srgan "):
            lines.append((line_of(text, match.start()), code))
    return lines


def srgan_argvs(line: str) -> list[list[str]]:
    """The arguments after each ``srgan`` / ``-m srgan_cli`` in one shell line, cut at shell
    operators (``&&``, ``|``, ``;``, redirections) and comments."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: not a command line
        return []
    segments: list[list[str]] = [[]]
    for token in tokens:
        if set(token) <= SHELL_OPERATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    argvs = []
    for tokens in segments:
        for i, token in enumerate(tokens):
            if token == "srgan":
                argvs.append(tokens[i + 1:])
                break
            if token == "-m" and tokens[i + 1:i + 2] == ["srgan_cli"]:
                argvs.append(tokens[i + 2:])
                break
    return argvs


def listed_options(command: click.Command, ctx: click.Context) -> dict[str, click.Option]:
    """The option names ``command --help`` lists (hidden options left out), to their option."""
    names = {}
    for param in command.get_params(ctx):
        if isinstance(param, click.Option) and param.get_help_record(ctx) is not None:
            for name in (*param.opts, *param.secondary_opts):
                names[name] = param
    return names


def argv_problems(argv: list[str], group: click.Group) -> list[str]:
    """What in ``srgan ARGV`` its ``--help`` pages do not list: an unknown subcommand or an
    unknown option of the command it is given to."""
    command: click.Command = group
    ctx = click.Context(group, info_name="srgan")
    name = "srgan"
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token in ("--", "...", "…"):
            break  # the end of options, or "and so on" in prose
        if token.startswith("-") and token != "-":
            option_name, has_value, _ = token.partition("=")
            options = listed_options(command, ctx)
            if option_name not in options:
                return [f"`{name}` has no option {option_name}"]
            option = options[option_name]
            if has_value or option.is_flag or option.count:
                continue
            if getattr(option, "_flag_needs_value", False) and (
                i >= len(argv) or argv[i].startswith("-")
            ):
                continue  # an option whose value may be left out (--compile alone)
            i += max(option.nargs, 1)
        elif isinstance(command, click.Group):
            sub = command.get_command(ctx, token)
            if sub is None:
                return [f"`{name}` has no subcommand {token}"]
            command, name = sub, f"{name} {token}"
            ctx = click.Context(sub, info_name=token, parent=ctx)
    return []


def command_problems(path: Path, group: click.Group, root: Path = ROOT) -> list[str]:
    """One line per ``srgan`` command shown in ``path`` that its ``--help`` would not accept."""
    problems = []
    for number, line in command_lines(path):
        for argv in srgan_argvs(line):
            for problem in argv_problems(argv, group):
                problems.append(f"{path.relative_to(root)}:{number}: {problem}: {line.strip()}")
    return problems


def cli_group() -> click.Group:
    from srgan_cli.cli import main

    return main


def test_every_relative_link_and_image_resolves():
    problems = [p for path in doc_files() for p in link_problems(path)]
    assert problems == [], "\n".join(problems)


def test_every_srgan_command_shown_uses_listed_subcommands_and_options():
    group = cli_group()
    problems = [p for path in doc_files() for p in command_problems(path, group)]
    assert problems == [], "\n".join(problems)


def test_the_command_check_reads_the_documents_commands():
    """Guards the checker itself: the front page's upscale examples are all found."""
    argvs = [argv for _, line in command_lines(ROOT / "README.md") for argv in srgan_argvs(line)]
    assert sum(argv[:1] == ["upscale"] for argv in argvs) >= 9
    assert any(argv[:1] == ["train"] for argv in argvs)
    assert any(argv[:1] == ["benchmark"] for argv in argvs)


def test_a_broken_link_image_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Tiling and memory\n")
    (tmp_path / "pic.png").write_bytes(b"")
    doc = tmp_path / "README.md"
    doc.write_text(
        "# Front\n\n![ok](pic.png) [ok](docs/page.md#tiling-and-memory) [ok](#front)\n"
        "[web](https://example.com/x) `[not a link](nowhere.md)`\n\n"
        "```bash\n[in code](nowhere.md)\n```\n\n"
        "![gone](missing.png) [gone](docs/old.md) [bad anchor](docs/page.md#tiling)\n"
    )
    problems = link_problems(doc, tmp_path)
    assert problems == [
        "README.md:10: missing.png: no such file",
        "README.md:10: docs/old.md: no such file",
        "README.md:10: docs/page.md#tiling: no heading #tiling in docs/page.md",
    ]


def test_a_renamed_option_or_unknown_subcommand_is_reported(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(
        "```bash\n"
        "uv run --frozen srgan upscale a.png -o - --tile 0 --no-optimize < x > y  # ok\n"
        "torchrun --nproc-per-node 8 -m srgan_cli train --data d --out r \\\n"
        "    --compile --batch-size 64\n"
        "srgan upscale a.png --tiles 256\n"
        "python -m srgan_cli upscal a.png\n"
        "```\n"
        "Inline: `srgan benchmark --speed --sizes 256`.\n"
    )
    problems = command_problems(doc, cli_group(), tmp_path)
    assert problems == [
        "page.md:5: `srgan upscale` has no option --tiles: srgan upscale a.png --tiles 256",
        "page.md:6: `srgan` has no subcommand upscal: python -m srgan_cli upscal a.png",
        "page.md:8: `srgan benchmark` has no option --sizes: srgan benchmark --speed --sizes 256",
    ]


def test_github_heading_slugs():
    assert github_slug("The fidelity/realism knob: `--perception`") == (
        "the-fidelityrealism-knob---perception"
    )
    assert github_slug("Set-up: two commands on a fresh machine") == (
        "set-up-two-commands-on-a-fresh-machine"
    )
    assert github_slug("Training on realistic degradations (real photos)") == (
        "training-on-realistic-degradations-real-photos"
    )
