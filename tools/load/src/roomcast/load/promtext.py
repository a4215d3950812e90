"""Reading a few gauges from a Prometheus text exposition (a gateway's /metrics)."""

from __future__ import annotations

from typing import Any

import httpx

RSS = "process_resident_memory_bytes"
CONNECTIONS = "roomcast_gateway_connections"


def metric_value(text: str, name: str) -> float | None:
    """The sum of the samples of metric ``name`` (any labels), or None if absent."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name) :]
        if rest[:1] not in (" ", "{"):
            continue  # a longer name with the same prefix
        try:
            total += float(line.rsplit(" ", 1)[1] if "}" not in rest else rest.split("}", 1)[1])
        except (IndexError, ValueError):
            continue
        found = True
    return total if found else None


async def scrape_gateway(client: httpx.AsyncClient, base_url: str) -> dict[str, Any]:
    """RSS and open connections of the gateway at ``base_url`` (None when unreadable)."""
    url = base_url.rstrip("/") + "/metrics"
    try:
        resp = await client.get(url)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        return {"url": base_url, "error": f"{type(exc).__name__}: {exc}"}
    rss = metric_value(resp.text, RSS)
    conns = metric_value(resp.text, CONNECTIONS)
    return {
        "url": base_url,
        "rss_bytes": None if rss is None else int(rss),
        "connections": None if conns is None else int(conns),
    }


def memory_per_socket(
    before: list[dict[str, Any]], after: list[dict[str, Any]], sockets: int | None = None
) -> dict[str, Any] | None:
    """RSS growth divided by the connections gained, per gateway and in total. A target
    that reports no connection count (``connections`` None) is credited ``sockets``."""
    rows = []
    total_delta = 0
    total_conns = 0
    for b, a in zip(before, after, strict=False):
        if b.get("rss_bytes") is None or a.get("rss_bytes") is None:
            rows.append({"url": b.get("url"), "error": a.get("error") or b.get("error")})
            continue
        delta = int(a["rss_bytes"]) - int(b["rss_bytes"])
        if a.get("connections") is None and sockets is not None:
            conns = sockets
        else:
            conns = int(a.get("connections") or 0) - int(b.get("connections") or 0)
        row: dict[str, Any] = {
            "url": b["url"],
            "rss_before_mib": round(int(b["rss_bytes"]) / 2**20, 1),
            "rss_after_mib": round(int(a["rss_bytes"]) / 2**20, 1),
            "connections_gained": conns,
            "bytes_per_socket": round(delta / conns) if conns > 0 else None,
        }
        rows.append(row)
        total_delta += delta
        total_conns += max(conns, 0)
    if not rows:
        return None
    return {
        "gateways": rows,
        "sockets": total_conns,
        "bytes_per_socket": round(total_delta / total_conns) if total_conns else None,
        "kib_per_socket": round(total_delta / total_conns / 1024, 2) if total_conns else None,
    }
