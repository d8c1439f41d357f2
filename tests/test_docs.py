"""The documentation shows the Procfile as shipped."""
from __future__ import annotations

import re

from tests.live import ROOT


def _procfile_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```\n(release: .*?)```", text, flags=re.S)]


def test_readme_and_deployment_guide_show_the_procfile_as_shipped():
    procfile = (ROOT / "Procfile").read_text().strip()
    for doc in ("README.md", "docs/deployment.md"):
        blocks = _procfile_blocks((ROOT / doc).read_text())
        assert blocks == [procfile], doc


def test_one_access_log_line_per_request_is_ours_not_gunicorns():
    for path in ("Procfile", "scripts/start"):
        assert "--access-log" not in (ROOT / path).read_text(), path
