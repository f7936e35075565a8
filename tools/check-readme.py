#!/usr/bin/env python3
"""Checks README.md against itself and the built binaries.

Usage: tools/check-readme.py [--build DIR] [--run]

- Every Markdown table has as many cells in each row as in its header (a pipe escaped as \\| does
  not count), so that it renders.
- The option tables under "## Options" name every option that `portpubd --help` and
  `portpubctl --help` of DIR (default: build) list, and no other, except in rows marked
  <!-- pending: ... --> (options another change is adding).
- With --run, the shell blocks between <!-- quick-start --> and <!-- /quick-start --> run in
  bash from the top of the tree, as one script with `set -euo pipefail`, within 120 s; on a
  failure the processes it started ($guest, $daemon and the bus of /tmp/pp-bus.pid) are stopped.

Prints what is wrong and exits 1, or exits 0.
"""
import argparse
import os
import re
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*[a-z]|-[a-z])\b")


def cells(line):
    """The cells of a table row: split at the pipes that are not escaped."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    if parts and parts[0] == "":
        parts = parts[1:]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    return parts


def tables(lines):
    """Yields (first line number, rows) of every table: runs of lines starting with '|'."""
    start = None
    for i, line in enumerate(lines + [""]):
        if line.startswith("|"):
            if start is None:
                start = i
        elif start is not None:
            yield start + 1, lines[start:i]
            start = None


def check_tables(lines):
    errors = []
    for first, rows in tables(lines):
        n = len(cells(rows[0]))
        if len(rows) < 2 or not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rows[1].strip()):
            errors.append(f"README.md:{first}: a table without a delimiter row")
            continue
        for k, row in enumerate(rows[1:], start=1):
            if len(cells(row)) != n:
                errors.append(
                    f"README.md:{first + k}: {len(cells(row))} cells, the header has {n}")
    return errors


def section_table(lines, heading):
    """The rows of the first table after the line `heading` (without header and delimiter)."""
    try:
        at = lines.index(heading)
    except ValueError:
        return None
    for first, rows in tables(lines):
        if first > at + 1:
            return rows[2:]
    return None


def help_options(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    found = set()
    for line in out.splitlines():
        if re.match(r"\s+-", line):  # an option line: its options, then two spaces and the text
            found.update(OPTION.findall(re.split(r"\s{2,}", line.strip())[0]))
    return found


def check_options(lines, build):
    errors = []
    options = lines.index("## Options") if "## Options" in lines else -1
    for name in ("portpubd", "portpubctl"):
        binary = os.path.join(build, "src", name, name)
        rows = section_table(lines[options:], f"### {name}") if options >= 0 else None
        if rows is None:
            errors.append(f"README.md: no options table under '## Options', '### {name}'")
            continue
        if not os.access(binary, os.X_OK):
            errors.append(f"{binary}: not built")
            continue
        documented, pending = set(), set()
        for row in rows:
            names = set(OPTION.findall(cells(row)[0]))
            (pending if "<!-- pending:" in row else documented).update(names)
        listed = help_options(binary)
        for o in sorted(listed - documented - pending):
            errors.append(f"README.md: {name} {o} is in --help but not in the table")
        for o in sorted(documented - listed):
            errors.append(f"README.md: {name} {o} is in the table but not in --help")
    return errors


def quick_start(lines):
    try:
        a = lines.index("<!-- quick-start -->")
        b = lines.index("<!-- /quick-start -->")
    except ValueError:
        return None
    script, inside = [], False
    for line in lines[a:b]:
        if line.startswith("```"):
            inside = line.strip() == "```sh" if not inside else False
        elif inside:
            script.append(line)
    return script


def run_quick_start(lines):
    script = quick_start(lines)
    if not script:
        return ["README.md: no <!-- quick-start --> ... <!-- /quick-start --> blocks"]
    prologue = [
        "set -euo pipefail",
        "stop() { rc=$?; [ $rc -eq 0 ] && return; echo \"quick start failed ($rc)\" >&2;",
        "  kill ${guest:-} ${daemon:-} $(cat /tmp/pp-bus.pid 2>/dev/null) 2>/dev/null || true; }",
        "trap stop EXIT",
        "set -x",
    ]
    try:
        r = subprocess.run(["bash", "-c", "\n".join(prologue + script)], cwd=TOP, timeout=120)
    except subprocess.TimeoutExpired:
        return ["README.md: the quick start did not finish within 120 s"]
    return [] if r.returncode == 0 else [f"README.md: the quick start failed ({r.returncode})"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(TOP, "build"))
    ap.add_argument("--run", action="store_true", help="also run the quick start")
    args = ap.parse_args()
    with open(os.path.join(TOP, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    errors = check_tables(lines) + check_options(lines, args.build)
    if args.run and not errors:
        errors += run_quick_start(lines)
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
