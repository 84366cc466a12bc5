"""Contact CSVs as customers upload them: existing and new contacts, some suppressed, some empty cells."""

from __future__ import annotations

import json
import random

MAPPING = json.dumps({"Email": "email", "First name": "first_name", "Last name": "last_name", "City": "data.city"})
FIRST = ("Ann", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lena", "Mo", "Noor")
LAST = ("Smith", "Lee", "Garcia", "Okafor", "Novak", "Silva", "Kim", "Ito", "Khan", "Berg")
CITIES = ("Leeds", "Paris", "Lagos", "Osaka", "Lima", "Oslo", "Pune", "Cork", "Graz")
EMPTY = {"first_name": 0.05, "last_name": 0.10, "city": 0.15}


def pool_email(account: int, index: int) -> str:
    return f"c{index}.a{account}@example.com"


def suppressed_indexes(pool: int, share: float) -> range:
    """The first ``share`` of each account's pool is on the suppression list."""
    return range(max(1, round(pool * share)))


def make_csv(rng: random.Random, account: int, rows: int, pool: int, new_share: float = 0.2) -> bytes:
    lines = ["Email,First name,Last name,City"]
    used: set[str] = set()
    while len(used) < rows:
        if rng.random() < new_share:
            email = f"n{rng.getrandbits(40):x}.a{account}@example.com"
        else:
            email = pool_email(account, rng.randrange(pool))
        if email in used:
            continue
        used.add(email)
        first = "" if rng.random() < EMPTY["first_name"] else rng.choice(FIRST)
        last = "" if rng.random() < EMPTY["last_name"] else rng.choice(LAST)
        city = "" if rng.random() < EMPTY["city"] else rng.choice(CITIES)
        lines.append(f"{email},{first},{last},{city}")
    return ("\n".join(lines) + "\n").encode()


def full_pool_csv(account: int, pool: int) -> bytes:
    lines = ["Email,First name,Last name,City"]
    lines += [
        f"{pool_email(account, i)},{FIRST[i % len(FIRST)]},{LAST[i % len(LAST)]},{CITIES[i % len(CITIES)]}"
        for i in range(pool)
    ]
    return ("\n".join(lines) + "\n").encode()
