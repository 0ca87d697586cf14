"""Refresh what is generated from the code: docs/stages.md (every stage, its options, ranges and
the facts it needs and provides) and pipeline/default_config.json (the bundled pipeline.yaml, parsed).

    python tests/tools/docs.py          # rewrite them in place
    python tests/tools/docs.py --check  # exit 1 if any is out of date (tests/test_docs.py runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.commands import stages_markdown  # noqa: E402
from pipeline.config import FROZEN_DEFAULT, freeze_default  # noqa: E402

STAGES_DOC = ROOT / "docs" / "stages.md"
HEADER = """# Stage reference

Every stage `pipeline.yaml` can name, generated from the code by `python tests/tools/docs.py`
(`voiceprep stages` prints the same). A chain item is `name` or `{name: {option: value}}`;
options are typed and range-checked before any audio is read. "Needs" and "provides" name the
facts stages share through the clip (the speech map, the chosen cut, the encoded WAV): a chain
whose order breaks them is refused with one line naming the problem. How chains are built and
checked: [configuration.md](configuration.md); how to add a stage: [design.md](design.md).

"""


def targets() -> dict[Path, str]:
    return {STAGES_DOC: HEADER + stages_markdown(), FROZEN_DEFAULT: freeze_default()}


def main() -> int:
    stale = [p for p, text in targets().items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    if "--check" in sys.argv:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run: python tests/tools/docs.py)", file=sys.stderr)
        return 1 if stale else 0
    for p, text in targets().items():
        if p in stale:
            p.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
