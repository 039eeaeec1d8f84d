"""Interop: the official `openai` SDK's AzureOpenAI client against memento-loadtest's mock.

Usage: azure_openai_client.py ENDPOINT API_KEY [DEPLOYMENT]

Runs a tool-calling exchange (tool call, tool result, text answer), one streamed tool call
and one streamed text answer, and checks the SDK's typed errors for a wrong key and an
unknown deployment. Prints "ok"; exits non-zero on any mismatch.
"""

import json
import sys
from pathlib import Path

import openai
from openai import AzureOpenAI

# tests/py/checks.py, shared with the other interop clients.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "py"))
from checks import check, fail  # noqa: E402


endpoint, key = sys.argv[1], sys.argv[2]
deployment = sys.argv[3] if len(sys.argv) > 3 else "gpt-4o-mini"
client = AzureOpenAI(azure_endpoint=endpoint, api_key=key, api_version="2024-10-21", max_retries=0)
tools = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {prop: {"type": "string"} for prop in props},
                "required": props[:1],
            },
        },
    }
    for name, description, props in [
        ("store_memory", "Store content for the person", ["content", "filename", "description", "tags"]),
        ("retrieve_memories", "Search the person's memories", ["query"]),
        ("list_tags", "List the tags in use", []),
    ]
]
messages = [
    {"role": "system", "content": "You are Memento..."},
    {"role": "user", "content": "Hey memento, store this recipe: Chocolate cake with 2 cups flour"},
]

# 1. A tool call.
response = client.chat.completions.create(
    model=deployment, messages=messages, tools=tools, tool_choice="auto", parallel_tool_calls=True
)
check(response.id.startswith("chatcmpl-"), f"id {response.id!r}")
check(response.object == "chat.completion", f"object {response.object!r}")
check(response.model == deployment, f"model {response.model!r}")
choice = response.choices[0]
check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}")
check(choice.message.role == "assistant", f"role {choice.message.role!r}")
check(len(choice.message.tool_calls or []) == 1, f"tool_calls {choice.message.tool_calls!r}")
call = choice.message.tool_calls[0]
check(call.type == "function", f"type {call.type!r}")
check(call.function.name == "store_memory", f"name {call.function.name!r}")
args = json.loads(call.function.arguments)
check(args.get("content") == "Chocolate cake with 2 cups flour", f"arguments {args!r}")
check(args.get("filename") == "recipe.txt", f"arguments {args!r}")
check("user_id" not in args, f"a user_id was passed: {args!r}")
check(response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens,
      f"usage {response.usage!r}")

# 2. The tool's result goes back; the answer is text.
messages.append(choice.message.model_dump(exclude_none=True))
messages.append({
    "role": "tool",
    "tool_call_id": call.id,
    "content": "Successfully stored 'recipe.txt' for user alice as 20240715_143052_recipe.txt",
})
final = client.chat.completions.create(model=deployment, messages=messages, tools=tools)
text = final.choices[0].message.content
check(final.choices[0].finish_reason == "stop", f"finish_reason {final.choices[0].finish_reason!r}")
check(text and "recipe.txt" in text, f"answer {text!r}")
check(not final.choices[0].message.tool_calls, "no tool calls in the answer")

# 3. The first request again, streamed: fragments reassemble by index into the same call.
stream = client.chat.completions.create(
    model=deployment, messages=messages[:2], tools=tools, stream=True, stream_options={"include_usage": True}
)
calls = {}
finish = None
usage = None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for streamed in chunk.choices:
        finish = streamed.finish_reason or finish
        for part in streamed.delta.tool_calls or []:
            entry = calls.setdefault(part.index, {"id": None, "name": None, "arguments": ""})
            if part.id:
                entry["id"] = part.id
            if part.function and part.function.name:
                entry["name"] = part.function.name
            if part.function and part.function.arguments:
                entry["arguments"] += part.function.arguments
check(finish == "tool_calls", f"streamed finish_reason {finish!r}")
check(list(calls) == [0], f"streamed calls {calls!r}")
check(calls[0]["id"] == call.id and calls[0]["name"] == "store_memory", f"streamed call {calls[0]!r}")
check(json.loads(calls[0]["arguments"]) == args, f"streamed arguments {calls[0]['arguments']!r}")
check(usage is not None and usage.total_tokens > 0, f"streamed usage {usage!r}")

# 4. The answer streamed as text.
stream = client.chat.completions.create(model=deployment, messages=messages, tools=tools, stream=True)
streamed_text = "".join(
    c.delta.content or "" for chunk in stream for c in chunk.choices
)
check(streamed_text == text, f"streamed text {streamed_text!r} != {text!r}")

# 5. The SDK's typed errors.
try:
    AzureOpenAI(azure_endpoint=endpoint, api_key="wrong", api_version="2024-10-21", max_retries=0) \
        .chat.completions.create(model=deployment, messages=messages[:2])
    fail("a wrong key was accepted")
except openai.AuthenticationError as error:
    check(error.status_code == 401, f"status {error.status_code}")
try:
    client.chat.completions.create(model="no-such-deployment", messages=messages[:2])
    fail("an unknown deployment was accepted")
except openai.NotFoundError as error:
    check(error.code == "DeploymentNotFound", f"code {error.code!r}")
print("ok")
