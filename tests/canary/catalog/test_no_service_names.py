"""Nothing under ``canary/`` names the incident's services (issue 15, item 2): the framework knows
services only through the catalog.  The replay and its load generator drive the incident's
services by design, and the catalog's README draft shows the shipped entries, so they are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

CANARY = Path(__file__).resolve().parents[3] / "canary"
EXEMPT = ("replay", "traffic")  # the incident's replay, and the load generator it drives
# a name, also inside an identifier or a counter's name (opens_recorded_total, services.importer)
NAMES = re.compile(r"(?<![a-z0-9])(importer|opens|resizer)s?(?![a-z0-9])", re.IGNORECASE)


def offenders() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(CANARY.rglob("*")):
        rel = path.relative_to(CANARY)
        if not path.is_file() or rel.parts[0] in EXEMPT or path.suffix not in (".py", ".yaml", ".json", ".html"):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if NAMES.search(line):
                found.setdefault(rel.as_posix(), []).append(f"{n}: {line.strip()}")
    return found


def test_nothing_in_canary_names_a_service_but_the_replay_and_its_load():
    found = offenders()
    assert not found, "\n".join(f"canary/{f}:{line}" for f, lines in found.items() for line in lines)


def test_the_check_sees_a_name(tmp_path):
    assert NAMES.search("PROCESSOR = {'opens': 'opens-processor'}") and NAMES.search("resizer 2.0")
    assert NAMES.search("opens_events_acknowledged_total") and NAMES.search("services.importer")
    assert not NAMES.search("opensource") and not NAMES.search("it reopens")
