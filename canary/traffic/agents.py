"""User agents of pixel hits, weighted roughly as mail opens arrive (2020s mix).

About 4% of hits carry no user agent at all: some desktop clients and corporate proxies send none.
"""

from __future__ import annotations

AGENTS: tuple[tuple[str, float], ...] = (
    ("Mozilla/5.0", 0.30),  # Apple Mail Privacy Protection
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", 0.25),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        0.10,
    ),
    ("Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Outlook 16.0", 0.10),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        0.06,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungEmail/6.1 Chrome/120",
        0.04,
    ),
    ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", 0.04),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.3.1", 0.02),
    ("Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", 0.03),
    ("python-requests/2.31.0", 0.02),
    ("", 0.04),  # no user agent
)


def names_and_weights() -> tuple[list[str], list[float]]:
    names = [a for a, _ in AGENTS]
    total = sum(w for _, w in AGENTS)
    return names, [w / total for _, w in AGENTS]
