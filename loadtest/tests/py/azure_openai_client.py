"""Interop: the official `openai` SDK's AzureOpenAI client against memento-loadtest's mock.

Usage: azure_openai_client.py ENDPOINT API_KEY
Exits non-zero on any mismatch.
"""

import json
import sys

from openai import AzureOpenAI

endpoint, key = sys.argv[1], sys.argv[2]
client = AzureOpenAI(azure_endpoint=endpoint, api_key=key, api_version="2024-10-21", max_retries=0)
tools = [{
    "type": "function",
    "function": {
        "name": "store_memory",
        "description": "Store content for a user",
        "parameters": {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]},
    },
}]
messages = [
    {"role": "system", "content": "You are Memento..."},
    {"role": "user", "content": "Hey memento, store this recipe: Chocolate cake with 2 cups flour"},
]
response = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools, tool_choice="auto")
message = response.choices[0].message
assert response.choices[0].finish_reason == "tool_calls", response
call = message.tool_calls[0]
assert call.function.name == "store_memory", call
args = json.loads(call.function.arguments)
assert "Chocolate cake" in args["content"], args
assert response.usage.total_tokens > 0

messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump()]})
messages.append({"role": "tool", "tool_call_id": call.id,
                 "content": "Successfully stored 'recipe.txt' for user alice as 20240715_143052_recipe.txt"})
final = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
text = final.choices[0].message.content
assert "recipe.txt" in text, text

stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages[:2], tools=tools, stream=True,
                                        stream_options={"include_usage": True})
arguments = {}
usage = None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        for tc in choice.delta.tool_calls or []:
            arguments[tc.index] = arguments.get(tc.index, "") + (tc.function.arguments or "")
assert "Chocolate cake" in json.loads(arguments[0])["content"], arguments
assert usage is not None and usage.total_tokens > 0

try:
    AzureOpenAI(azure_endpoint=endpoint, api_key="wrong", api_version="2024-10-21", max_retries=0) \
        .chat.completions.create(model="gpt-4o-mini", messages=messages[:2])
    raise SystemExit("FAIL: a wrong key was accepted")
except Exception as error:  # openai.AuthenticationError
    assert getattr(error, "status_code", None) == 401, error
print("ok")
