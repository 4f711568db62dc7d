#!/usr/bin/env bash
# Checks the Markdown against the repository and the node binary:
#
#   - every relative link and image in every tracked Markdown file points to
#     a file or folder that exists, and a `#anchor` to a heading of that file
#     (GitHub's heading ids);
#   - every `scripts/...` path named in the Markdown (code blocks included)
#     exists;
#   - every flag named in docs/configuration.md exists in the `--help` of
#     the command whose section names it (`node`, `node regions list`, ...),
#     every environment variable in its tables is one that `--help` names,
#     the default in its tables is the one `--help` shows, and every flag
#     of those commands' `--help` is in its section's tables; every
#     subcommand of `node --help` has a section.
#
# Prints one line per problem (file, line, what) and exits 1 if there is any.
# Needs python3 (standard library only) and the built node binary.
#
#   scripts/check-docs.sh [NODE_BINARY]      default: $NODE_BIN, else target/release/node
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_BIN="${1:-${NODE_BIN:-target/release/node}}"
if [[ ! -x "$NODE_BIN" ]]; then
  echo "check-docs: no node binary at $NODE_BIN (cargo build --release -p node, or pass its path)" >&2
  exit 1
fi
export NODE_BIN
exec python3 - <<'PY'
import glob
import os
import re
import subprocess
import sys

NODE_BIN = os.environ["NODE_BIN"]
problems = []


def problem(path, line, what):
    problems.append(f"{path}:{line}: {what}")


def markdown_files():
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.md"],
        check=True, capture_output=True, text=True,
    ).stdout.split("\n")
    return sorted({p for p in out if p and os.path.isfile(p)})


FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text):
    """(line number, line) outside fenced code blocks, inline code blanked."""
    fenced = False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        yield n, re.sub(r"`[^`]*`", lambda m: "`" + "x" * (len(m.group(0)) - 2) + "`", line)


def slug(heading):
    """GitHub's id for a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


anchor_cache = {}


def anchors(path):
    if path not in anchor_cache:
        seen = {}
        ids = set()
        with open(path, encoding="utf-8") as f:
            text = f.read()
        fenced = False
        for line in text.split("\n"):
            if FENCE.match(line):
                fenced = not fenced
                continue
            m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            base = slug(m.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            ids.add(base if count == 0 else f"{base}-{count}")
        ids.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', text))
        anchor_cache[path] = ids
    return anchor_cache[path]


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
SCRIPT = re.compile(r"(?<![\w./-])scripts/[\w*][\w.*/-]*")


def check_links(path, text):
    base = os.path.dirname(path)
    for n, line in prose_lines(text):
        targets = [m.group(1) for m in LINK.finditer(line)]
        m = REFDEF.match(line)
        if m:
            targets.append(m.group(1))
        for target in targets:
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            if file_part:
                resolved = os.path.normpath(os.path.join(base, file_part))
                if not os.path.exists(resolved):
                    problem(path, n, f"broken link {target}: no file {resolved}")
                    continue
            else:
                resolved = path
            if anchor and resolved.endswith(".md") and os.path.isfile(resolved):
                if anchor.lower() not in anchors(resolved):
                    problem(path, n, f"broken link {target}: no heading #{anchor} in {resolved}")


def check_script_paths(path, text):
    for n, line in enumerate(text.split("\n"), 1):
        for m in SCRIPT.finditer(line):
            name = m.group(0).rstrip(".,:;/-")
            if name == "scripts":
                continue
            if "*" in name:
                if not glob.glob(name):
                    problem(path, n, f"{name} matches no file")
            elif not os.path.exists(name):
                problem(path, n, f"{name} does not exist")


# --- docs/configuration.md against --help -----------------------------------

HELP_FLAG = re.compile(r"^ {2,6}(?:-[A-Za-z0-9], )?(--[a-z0-9][a-z0-9-]*)")
HELP_ENV = re.compile(r"\[env: ([A-Z0-9_]+)")
HELP_DEFAULT = re.compile(r"\[default: ([^\]]*)\]")
FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
IGNORED = {"--help", "--version"}
help_cache = {}


def help_of(command):
    """(flags, env vars, subcommands, defaults by flag) of `node <words> --help`."""
    if command not in help_cache:
        words = command.split()[1:]
        run = subprocess.run([NODE_BIN, *words, "--help"], capture_output=True, text=True)
        if run.returncode != 0:
            help_cache[command] = None
        else:
            flags, envs, subs, defaults = set(), set(), set(), {}
            in_commands = False
            current = None
            for line in run.stdout.split("\n"):
                if re.match(r"^\S.*:$", line):
                    in_commands = line.startswith("Commands:")
                    continue
                if in_commands:
                    m = re.match(r"^ {2}([a-z][a-z0-9-]*)\s", line + " ")
                    if m and m.group(1) != "help":
                        subs.add(m.group(1))
                    continue
                m = HELP_FLAG.match(line)
                if m:
                    current = m.group(1)
                    if current not in IGNORED:
                        flags.add(current)
                envs.update(HELP_ENV.findall(line))
                for d in HELP_DEFAULT.findall(line):
                    if current:
                        defaults[current] = d
            help_cache[command] = (flags, envs, subs, defaults)
    return help_cache[command]


def check_configuration(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Sections: a heading naming `node ...` in backticks starts the section
    # of those commands; a heading that names none inherits its parent's
    # (deeper) or has none (as deep or shallower).
    stack = []  # (level, [commands])
    default_column = None  # the column headed "default" in the current table
    named = {}  # command -> set of flags in its tables
    fenced = False
    for n, line in enumerate(lines, 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        h = re.match(r"^(#{1,6})\s+(.*)$", line)
        if h:
            level = len(h.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            commands = re.findall(r"`(node(?: [a-z][a-z0-9-]*)*)`", h.group(2))
            if not commands and stack:
                commands = stack[-1][1]
            stack.append((level, commands))
            for c in commands:
                named.setdefault(c, set())
                if help_of(c) is None:
                    problem(path, n, f"`{c} --help` fails: no such command")
            continue
        commands = stack[-1][1] if stack else []
        helps = [help_of(c) for c in commands if help_of(c) is not None]
        main = help_of("node")
        if main is None:
            problem(path, n, f"`{NODE_BIN} --help` fails")
            return
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        if not cells:
            default_column = None
        elif cells[0] == "flag":
            default_column = cells.index("default") if "default" in cells else None
            continue
        table_row = len(cells) > 1 and not re.match(r"^:?-+:?$", cells[0])
        for flag in FLAG.findall(line):
            known = set().union(*(h[0] for h in helps)) if helps else main[0]
            if flag in IGNORED:
                continue
            in_first_cell = table_row and flag in FLAG.findall(cells[0])
            if in_first_cell:
                if flag not in known:
                    where = ", ".join(f"`{c} --help`" for c in commands) or "`node --help`"
                    problem(path, n, f"{flag} is not a flag of {where}")
                for c in commands:
                    named.setdefault(c, set()).add(flag)
            elif flag not in known and flag not in main[0]:
                problem(path, n, f"{flag} is named here but is not a flag of the node")
        if table_row and helps and len(cells) > 1 and FLAG.findall(cells[0]):
            envs = set().union(*(h[1] for h in helps))
            for var in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]):
                if var not in envs:
                    problem(path, n, f"{var} ({cells[0]}) is not an environment variable of the command's --help")
            if default_column is not None and default_column < len(cells):
                documented = re.findall(r"`([^`]*)`", cells[default_column])
                for flag in FLAG.findall(cells[0]):
                    for h in helps:
                        actual = h[3].get(flag)
                        if actual is not None and actual not in documented:
                            problem(path, n, f"{flag}: --help says the default is `{actual}`, the table says {cells[default_column]!r}")
    # The reverse: every flag of each documented command is in its tables,
    # and every subcommand of `node` has a section.
    for command, documented in named.items():
        h = help_of(command)
        if h is None:
            continue
        for flag in sorted(h[0] - documented):
            problem(path, 0, f"{flag} (`{command} --help`) is not documented in {path}")
    def leaves(command):
        h = help_of(command)
        if h is None or not h[2]:
            return [command]
        return [leaf for sub in sorted(h[2]) for leaf in leaves(f"{command} {sub}")]
    if "node" not in named:
        problem(path, 0, "no section for `node`")
    for leaf in leaves("node"):
        if leaf != "node" and leaf not in named:
            problem(path, 0, f"`{leaf}` has no section in {path}")


files = markdown_files()
for path in files:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    check_links(path, text)
    check_script_paths(path, text)
if os.path.isfile("docs/configuration.md"):
    check_configuration("docs/configuration.md")
else:
    problem("docs/configuration.md", 0, "missing")

for p in problems:
    print(p)
if problems:
    print(f"check-docs: {len(problems)} problem(s) in {len(files)} Markdown files", file=sys.stderr)
    sys.exit(1)
print(f"check-docs: {len(files)} Markdown files: links, scripts paths and docs/configuration.md's flags all check out")
PY
