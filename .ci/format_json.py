"""Format the repository's JSON files as the MONAI model zoo's pre-commit hook does.

The zoo runs pre-commit-hooks' ``pretty-format-json --autofix --no-sort-keys --indent=4``; this script produces
exactly that hook's output (v4.6.0, ``pre_commit_hooks/pretty_format_json.py``) without needing pre-commit:
the file is read as UTF-8 text, parsed keeping the order of the keys, and written back as
``json.dumps(indent=4, ensure_ascii=True, separators=(",", ": "))`` plus a final newline.

It acts on every git-tracked ``*.json`` file and on the untracked ones git does not ignore.

    python .ci/format_json.py --check [PATH ...]   # list the files that would change; exit 1 if any
    python .ci/format_json.py --fix [PATH ...]     # rewrite them

PATH (files or folders) limits the run to the JSON files under them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDENT = 4


def pretty_format(contents: str) -> str:
    """The text pretty-format-json --no-sort-keys --indent=4 would write for ``contents``."""
    data = json.loads(contents, object_pairs_hook=dict)  # the hook's pairs_first without sorting: keys keep their order
    return json.dumps(data, indent=INDENT, ensure_ascii=True, separators=(",", ": ")) + "\n"


def json_files(root: Path | None = None) -> list[str]:
    """Tracked ``*.json`` files plus untracked, non-ignored ones, relative to ``root``, that exist on disk."""
    commands = (
        ["git", "ls-files", "-z", "--", "*.json"],
        ["git", "ls-files", "-z", "--others", "--exclude-standard", "--", "*.json"],
    )
    root = ROOT if root is None else root
    names = set()
    for command in commands:
        out = subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout
        names.update(name for name in out.split("\0") if name)
    return sorted(name for name in names if (root / name).is_file())


def under(name: str, paths: list[Path]) -> bool:
    path = (ROOT / name).resolve()
    return any(path == p or p in path.parents for p in paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="list the files that would change; exit 1 if any")
    mode.add_argument("--fix", action="store_true", help="rewrite the files that are not formatted")
    parser.add_argument("paths", nargs="*", type=Path, help="only the JSON files under these files or folders")
    args = parser.parse_args(argv)

    names = json_files()
    if args.paths:
        wanted = [p.resolve() for p in args.paths]
        names = [name for name in names if under(name, wanted)]

    invalid = changed = False
    for name in names:
        path = ROOT / name
        # Text mode like the hook: universal newlines, so only the content and indentation decide.
        with open(path, encoding="UTF-8") as f:
            contents = f.read()
        try:
            pretty = pretty_format(contents)
        except ValueError as err:
            print(f"{name}: not valid JSON ({err})")
            invalid = True
            continue
        if contents == pretty:
            continue
        changed = True
        if args.fix:
            with open(path, "w", encoding="UTF-8") as f:
                f.write(pretty)
            print(f"reformatted {name}")
        else:
            print(f"would reformat {name}")
    if args.check and changed:
        print(f"run `python {Path(__file__).relative_to(ROOT)} --fix` (or `make format`) to reformat", file=sys.stderr)
    # --fix succeeds unless a file is not valid JSON; --check also fails when a file would change.
    return int(invalid or (args.check and changed))


if __name__ == "__main__":
    raise SystemExit(main())
