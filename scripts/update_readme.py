"""Regenerate the README's generated blocks: the data-dictionary table from helpers.schema (the single source
of truth) and the Telco run configuration from src/helpers/config/presets/telco.yaml (the example a student
copies)."""

import re
import sys
from pathlib import Path

from helpers.config import preset
from helpers.schema import dictionary_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- dictionary:start -->", "<!-- dictionary:end -->"
TELCO_START, TELCO_END = "<!-- telco-config:start -->", "<!-- telco-config:end -->"


def telco_block() -> str:
    """The Telco preset as a fenced YAML block."""
    return "```yaml\n" + preset("telco").read_text().rstrip("\n") + "\n```"


def render(text: str) -> str:
    """``text`` (the README) with every generated block current."""
    for start, end, body in ((START, END, dictionary_markdown()), (TELCO_START, TELCO_END, telco_block())):
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _m: start + "\n" + body + "\n" + end,
                      text, flags=re.S)
    return text


def main() -> int:
    text = README.read_text()
    new = render(text)
    README.write_text(new)
    print("README generated blocks", "updated" if new != text else "already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
