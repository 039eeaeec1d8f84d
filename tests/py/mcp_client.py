"""Interop check: the official Python MCP SDK client against `memento mcp-server`.

Usage: mcp_client.py BASE_URL TRANSPORT [TOKEN]   (TRANSPORT: sse | streamable-http)

Calls every tool the way the seed's client does and exits non-zero on any mismatch.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamablehttp_client

from checks import fail


def text_of(result):
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def exercise(session, user):
    await session.initialize()
    tools = await session.list_tools()
    names = sorted(t.name for t in tools.tools)
    want = sorted(["store_memory", "retrieve_memories", "get_memory", "delete_memory", "list_tags"])
    if names != want:
        fail(f"tools {names} != {want}")
    for tool in tools.tools:
        if "user_id" not in tool.inputSchema.get("properties", {}):
            fail(f"{tool.name} schema lacks user_id")

    stored = await session.call_tool(
        "store_memory",
        {
            "user_id": user,
            "content": "Q4 planning meeting: ship the rewrite by December",
            "filename": "meeting_summary.txt",
            "description": "Team meeting notes",
            "tags": "work,meeting",
        },
    )
    if stored.isError:
        fail(f"store failed: {text_of(stored)}")
    text = text_of(stored)
    if not text.startswith(f"Successfully stored 'meeting_summary.txt' for user {user} as "):
        fail(f"unexpected store text {text!r}")
    memory_id = stored.structuredContent["id"]

    found = await session.call_tool("retrieve_memories", {"user_id": user, "query": "Q4 plan"})
    hits = json.loads(text_of(found))["memories"]
    if [h["id"] for h in hits] != [memory_id]:
        fail(f"retrieve returned {hits}")

    got = await session.call_tool("get_memory", {"user_id": user, "id": memory_id})
    if "ship the rewrite" not in json.loads(text_of(got))["content"]:
        fail("get_memory lost the content")

    tags = await session.call_tool("list_tags", {"user_id": user})
    if sorted(t["tag"] for t in json.loads(text_of(tags))["tags"]) != ["meeting", "work"]:
        fail(f"list_tags: {text_of(tags)}")

    bad = await session.call_tool("store_memory", {"user_id": "../bob", "content": "x"})
    if not bad.isError:
        fail("a hostile user_id was accepted")
    # The session survives bad arguments.
    again = await session.call_tool("retrieve_memories", {"user_id": user, "query": "*"})
    if again.isError or json.loads(text_of(again))["memories"]:
        fail("query '*' errored or matched everything")

    deleted = await session.call_tool("delete_memory", {"user_id": user, "id": memory_id})
    if deleted.isError or memory_id not in text_of(deleted):
        fail(f"delete failed: {text_of(deleted)}")
    gone = await session.call_tool("get_memory", {"user_id": user, "id": memory_id})
    if not gone.isError:
        fail("deleted memory still readable")


async def main():
    base, transport = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    user = f"py_{transport.replace('-', '_')}"
    if transport == "sse":
        async with sse_client(f"{base}/sse", headers=headers) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session, user)
    else:
        async with streamablehttp_client(f"{base}/mcp", headers=headers) as (read, write, _):
            async with ClientSession(read, write) as session:
                await exercise(session, user)
    print("ok")


asyncio.run(main())
