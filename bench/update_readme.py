"""Refresh the generated blocks of README.md: the stage reference and the sections kept in docs/.

    python bench/update_readme.py          # rewrite README.md in place
    python bench/update_readme.py --check  # exit 1 if README.md is out of date (tests/test_docs.py)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.commands import stages_markdown  # noqa: E402

SECTIONS = {"quality": "docs/quality.md", "enrollment": "docs/enrollment.md", "emulator": "docs/emulator.md", "bench": "docs/benchmarks.md"}


def blocks() -> dict[str, str]:
    out = {"stages": stages_markdown()}
    for name, rel in SECTIONS.items():
        p = ROOT / rel
        out[name] = p.read_text(encoding="utf-8") if p.exists() else ""
    return out


def render(text: str) -> str:
    for name, body in blocks().items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, b=body: m.group(1) + b.rstrip("\n") + ("\n" if b.strip() else "") + m.group(2), text)
    return text


def main() -> int:
    readme = ROOT / "README.md"
    old = readme.read_text(encoding="utf-8")
    new = render(old)
    if "--check" in sys.argv:
        return 0 if new == old else 1
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
