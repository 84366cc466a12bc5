"""Nothing under ``canary/`` names the incident's services (issue 15, item 2): the framework knows
services only through the catalog.  The replay and its load generator drive the incident's
services by design, and the catalog's README draft shows the shipped entries, so they are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

CANARY = Path(__file__).resolve().parents[3] / "canary"
EXEMPT = ("replay", "traffic")  # the incident's replay, and the load generator it drives
NAMES = re.compile(r"\b(importer|opens-processor|opens|resizer)s?\b", re.IGNORECASE)
# Still naming them, in modules other helpers own (the metric providers' built-in "conservation"
# counters read the open tracker's processor, and comments in the routing module): each is named,
# so a new one anywhere else fails this test, and removing one makes it fail until it leaves this list.
KNOWN = {
    "providers/builtin.py",
    "providers/prometheus.py",
    "controller/routing.py",
}


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
    new = {f: lines for f, lines in found.items() if f not in KNOWN}
    assert not new, "\n".join(f"canary/{f}:{line}" for f, lines in new.items() for line in lines)
    assert set(found) == KNOWN, f"no longer naming a service: {sorted(KNOWN - set(found))}; drop them from KNOWN"


def test_the_check_sees_a_name(tmp_path):
    assert NAMES.search("PROCESSOR = {'opens': 'opens-processor'}") and NAMES.search("resizer 2.0")
    assert not NAMES.search("opensource") and not NAMES.search("it reopens")
