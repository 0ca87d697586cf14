"""Refresh what is generated from other files: the README's stage reference and the sections kept
in docs/, and pipeline/default_config.json (the bundled pipeline.yaml, parsed).

    python bench/update_readme.py          # rewrite them in place
    python bench/update_readme.py --check  # exit 1 if any is out of date (tests/test_docs.py)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.commands import stages_markdown  # noqa: E402
from pipeline.config import FROZEN_DEFAULT, freeze_default  # noqa: E402

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
    targets = {readme: render(readme.read_text(encoding="utf-8")), FROZEN_DEFAULT: freeze_default()}
    stale = [p for p, text in targets.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    if "--check" in sys.argv:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(targets[p], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
