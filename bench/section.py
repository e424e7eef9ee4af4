#!/usr/bin/env python3
"""Writes one section of BENCHMARKS.md: every bench/ script goes through here.

  section.py BENCH_MD TITLE INTRO_FILE BODY_FILE   section = TITLE, the intro (with @WHEN@, @COMMIT@ and @CORES@
                                                   filled in), then the body
  section.py --whole BENCH_MD TITLE SECTION_FILE   the file is the whole section, title line included

The section TITLE is replaced up to the next "## " heading, or appended when the file has none yet.
"""
import datetime
import os
import subprocess
import sys


def commit_label(root):
    """The short commit of the checkout at `root`, marked when files other than BENCHMARKS.md are modified
    (BENCHMARKS.md itself changes while a run of several parts goes on)."""
    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md"):
        commit += " + uncommitted changes"
    return commit


def fill(template, root):
    """`template` with @WHEN@ (UTC time), @COMMIT@ (see `commit_label`) and @CORES@ replaced."""
    when = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    return (template.replace("@WHEN@", when).replace("@COMMIT@", commit_label(root))
            .replace("@CORES@", str(os.cpu_count())))


def replace(bench_md, title, section):
    """Puts `section` (which starts with its title line) in place of the section `title` of `bench_md`."""
    text = open(bench_md).read() if os.path.exists(bench_md) else "# Benchmarks\n"
    section = section.strip() + "\n"
    start = text.find(title + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    with open(bench_md, "w") as f:
        f.write(text)
    print(f"updated {bench_md} ({title})")


def write(bench_md, title, intro_file, body_file):
    """The section TITLE made of the filled-in intro and the body."""
    root = os.path.dirname(os.path.abspath(bench_md))
    intro = fill(open(intro_file).read().strip(), root)
    body = open(body_file).read().strip()
    replace(bench_md, title, f"{title}\n\n{intro}\n\n{body}\n")


def main():
    args = sys.argv[1:]
    if len(args) == 4 and args[0] == "--whole":
        replace(args[1], args[2], open(args[3]).read())
    elif len(args) == 4:
        write(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
