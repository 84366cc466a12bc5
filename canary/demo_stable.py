"""The foundation demo: the three services at their stable release, on SQLite, with a little traffic.

Starts each service as its own process, sends an import, some pixel hits and image requests, prints
where each listens and what it answered, and stops everything (also on Ctrl-C).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from canary.platforms.processes import ServiceProcess, start_service, wait_ready
from canary.traffic import images

OUTLOOK = "Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Outlook 16.0"


def run(state_dir: Path, say: Any = print) -> dict[str, Any]:
    state_dir.mkdir(parents=True, exist_ok=True)
    admin = secrets.token_urlsafe(16)
    env = {"CANARY_ADMIN_TOKEN": admin}
    procs: list[ServiceProcess] = []
    try:
        for name in ("importer", "opens", "opens-processor", "resizer"):
            db = "opens" if name.startswith("opens") else name
            procs.append(
                start_service(name, "1.0", db_url=f"sqlite:///{state_dir / db}.db", state_dir=state_dir, env=env)
            )
        for p in procs:
            wait_ready(p)
            say(f"  {p.name:<16} release {p.release}  listening on {p.url}  (log {p.log_path})")
        by_name = {p.name: p for p in procs}
        answers = {
            "importer": _import(by_name["importer"].url),
            "opens": _opens(by_name["opens"].url, admin),
            "resizer": _resize(by_name["resizer"].url),
        }
        for name, answer in answers.items():
            say(f"  {name:<16} answered: {json.dumps(answer)}")
        return answers
    finally:
        for p in reversed(procs):
            p.stop()
        say("  all services stopped")


def _import(url: str) -> dict[str, Any]:
    httpx.put(f"{url}/suppressions/sam@example.com", json={"reason": "unsubscribed"}).raise_for_status()
    rows = "\n".join(f"user{i}@example.com,User,{i},Leeds" for i in range(1000))
    csv = f"Email,First,Last,City\n{rows}\nsam@example.com,Sam,,\nbroken-address,X,,\n"
    mapping = json.dumps({"Email": "email", "First": "first_name", "Last": "last_name", "City": "data.city"})
    r = httpx.post(f"{url}/address-books/1/imports", files={"file": ("c.csv", csv)}, data={"mapping": mapping})
    r.raise_for_status()
    body = r.json()
    return {k: body[k] for k in ("created", "updated", "suppressed_skipped", "rejected")}


def _opens(url: str, admin: str) -> dict[str, Any]:
    sends = [{"campaign_id": 1, "contact_id": i, "send_id": i} for i in range(20)]
    r = httpx.post(f"{url}/admin/tokens", json={"sends": sends}, headers={"Authorization": f"Bearer {admin}"})
    r.raise_for_status()
    with httpx.Client(base_url=url) as client:
        for t in r.json()["tokens"]:
            client.get(t["url"], headers={"User-Agent": OUTLOOK}).raise_for_status()
        deadline = time.monotonic() + 15
        while client.get("/stats").json()["events_pending"] and time.monotonic() < deadline:
            time.sleep(0.1)
        report: dict[str, Any] = client.get("/campaigns/1/opens").json()
    return report


def _resize(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url) as client:
        r = client.post("/images", content=images.exif_rotated_jpeg(1200, 800))
        r.raise_for_status()
        image_id = r.json()["id"]
        variant = client.get(f"/images/{image_id}", params={"w": 300})
        variant.raise_for_status()
    return {"image": image_id, "variant_bytes": len(variant.content), "content_type": variant.headers["content-type"]}
