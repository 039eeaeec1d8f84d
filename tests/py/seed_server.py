"""A seed-style memory server: Python FastMCP over the legacy SSE transport, one text file
per memory in a per-user folder, as in shared/seed/memento-client-flow.md.

Usage: seed_server.py PORT DATA_DIR

Used by the interop test that points `memento serve` at a server nobody here wrote.
"""

import datetime
import os
import re
import sys

from mcp.server.fastmcp import FastMCP

port = int(sys.argv[1])
data_dir = sys.argv[2]
mcp = FastMCP("seed-memento", host="127.0.0.1", port=port)


def _safe(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "memory"


@mcp.tool()
def store_memory(user_id: str, content: str, filename: str = "memory.txt",
                 description: str = "", tags: str = "") -> str:
    """Store content for a user."""
    folder = os.path.join(data_dir, _safe(user_id))
    os.makedirs(folder, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    stored_as = f"{stamp}_{_safe(filename)}"
    with open(os.path.join(folder, stored_as), "w", encoding="utf-8") as f:
        f.write(content)
    return f"Successfully stored '{filename}' for user {user_id} as {stored_as}"


@mcp.tool()
def retrieve_memories(user_id: str, query: str = "") -> str:
    """Retrieve a user's stored memories matching a query."""
    folder = os.path.join(data_dir, _safe(user_id))
    if not os.path.isdir(folder):
        return "No memories stored."
    found = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            text = f.read()
        words = [w for w in re.split(r"\W+", query.lower()) if w]
        if not words or any(w in text.lower() for w in words):
            found.append(f"{name}: {text}")
    return "\n".join(found) if found else "No matching memories."


if __name__ == "__main__":
    print(f"seed server on {port}", flush=True)
    mcp.run(transport="sse")
