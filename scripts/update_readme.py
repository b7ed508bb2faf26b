"""Regenerate the README's data-dictionary table from helpers.schema (the single source of truth)."""

import re
import sys
from pathlib import Path

from helpers.schema import dictionary_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- dictionary:start -->", "<!-- dictionary:end -->"


def main() -> int:
    text = README.read_text()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), START + "\n" + dictionary_markdown() + "\n" + END,
                 text, flags=re.S)
    README.write_text(new)
    print("README data dictionary", "updated" if new != text else "already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
