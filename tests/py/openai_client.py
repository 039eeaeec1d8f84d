"""Interop check: the official `openai` Python SDK against Memento's OpenAI-compatible API.

Usage: openai_client.py BASE_URL USER [TOKEN]

BASE_URL is the daemon's (`http://127.0.0.1:PORT`). Without TOKEN the daemon must be in
loopback mode, and USER goes in OpenAI's `user` field; with a service token, the same. A
store in one request must be found by a question in a later one, streamed and not. Exits
non-zero on any mismatch.
"""

import sys

import openai

from checks import check, fail


def check_usage(usage, what):
    check(usage is not None, f"{what}: no usage")
    check(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"{what}: usage {usage}")
    check(
        usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"{what}: usage does not add up: {usage}",
    )


def main():
    if len(sys.argv) < 3:
        fail("usage: openai_client.py BASE_URL USER [TOKEN]")
    base, user = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else "unused-in-loopback-mode"
    # No SDK retries: a failure must show, not be papered over.
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=60)

    models = [m.id for m in client.models.list()]
    check(models == ["memento"], f"models: {models}")
    check(client.models.retrieve("memento").id == "memento", "models.retrieve")

    store = [{"role": "user", "content": "remember that my bike lock code is 3141"}]
    stored = client.chat.completions.create(model="memento", messages=store, user=user)
    check(stored.object == "chat.completion", f"object: {stored.object}")
    check(stored.model == "memento", f"model: {stored.model}")
    check(stored.id.startswith("chatcmpl-"), f"id: {stored.id}")
    choice = stored.choices[0]
    check(choice.finish_reason == "stop", f"finish_reason: {choice.finish_reason}")
    check(choice.message.role == "assistant", f"role: {choice.message.role}")
    check(bool(choice.message.content), "empty answer to the store")
    check_usage(stored.usage, "store")

    # A later request: the client sends the conversation so far, as OpenAI clients do.
    conversation = store + [
        {"role": "assistant", "content": choice.message.content},
        {"role": "user", "content": "what did I store about my bike lock?"},
    ]
    found = client.chat.completions.create(model="memento", messages=conversation, user=user)
    answer = found.choices[0].message.content or ""
    check("3141" in answer, f"non-streamed question did not find the store: {answer!r}")
    check_usage(found.usage, "question")

    # The same question, streamed, from a fresh conversation: the memory is the server's.
    stream = client.chat.completions.create(
        model="memento",
        messages=[{"role": "user", "content": "what did I store about my bike lock?"}],
        user=user,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, roles, finish, usage, chunks = "", [], None, None, 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", f"chunk object: {chunk.object}")
        if chunk.usage is not None:
            usage = chunk.usage
            check(chunk.choices == [], "the usage chunk has choices")
        for delta_choice in chunk.choices:
            if delta_choice.delta.role:
                roles.append(delta_choice.delta.role)
            text += delta_choice.delta.content or ""
            if delta_choice.finish_reason:
                finish = delta_choice.finish_reason
    check(roles == ["assistant"], f"roles: {roles}")
    check("3141" in text, f"streamed question did not find the store: {text!r}")
    check(finish == "stop", f"streamed finish_reason: {finish}")
    check_usage(usage, "streamed question")
    check(chunks >= 4, f"only {chunks} chunks")

    # Errors arrive as the SDK's own exceptions, with OpenAI's codes.
    try:
        client.chat.completions.create(model="gpt-4o", messages=store, user=user)
        fail("an unknown model was accepted")
    except openai.NotFoundError as error:
        check(error.code == "model_not_found", f"unknown model code: {error.code}")
    try:
        client.chat.completions.create(
            model="memento",
            messages=store,
            user=user,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
        fail("client tools were accepted")
    except openai.BadRequestError as error:
        check(error.param == "tools", f"client tools param: {error.param}")
    try:
        client.chat.completions.create(model="memento", messages=store, user="../bob")
        fail("an invalid user was accepted")
    except openai.BadRequestError as error:
        check(error.code == "invalid_user_id", f"invalid user code: {error.code}")
    print("ok")


if __name__ == "__main__":
    main()
