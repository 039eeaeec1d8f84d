// Interop check: the official `openai` npm package against Memento's OpenAI-compatible API.
//
// Usage: node openai_client.mjs BASE_URL TOKEN
//
// TOKEN is a user token: the daemon takes the user from it, so no `user` field is needed
// (one naming someone else is sent, and must be ignored). A store in one request must be
// found by a question in a later one, streamed and not. Exits non-zero on any mismatch.

import OpenAI from "openai";

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
}

function checkUsage(usage, what) {
  check(usage, `${what}: no usage`);
  check(usage.prompt_tokens > 0 && usage.completion_tokens > 0, `${what}: usage ${JSON.stringify(usage)}`);
  check(
    usage.total_tokens === usage.prompt_tokens + usage.completion_tokens,
    `${what}: usage does not add up: ${JSON.stringify(usage)}`,
  );
}

async function main() {
  const [base, token] = process.argv.slice(2);
  if (!base || !token) fail("usage: node openai_client.mjs BASE_URL TOKEN");
  // No SDK retries: a failure must show, not be papered over.
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: token, maxRetries: 0, timeout: 60_000 });

  const models = [];
  for await (const model of client.models.list()) models.push(model.id);
  check(JSON.stringify(models) === '["memento"]', `models: ${JSON.stringify(models)}`);

  // Stored streamed, asked for later without streaming, then streamed again.
  const store = [{ role: "user", content: "remember that the boat is moored at pier 27" }];
  const storeStream = await client.chat.completions.create({
    model: "memento",
    messages: store,
    user: "somebody-else",
    stream: true,
  });
  let stored = "";
  let finish = null;
  for await (const chunk of storeStream) {
    check(chunk.object === "chat.completion.chunk", `chunk object: ${chunk.object}`);
    check(chunk.usage === undefined, "a usage chunk nobody asked for");
    for (const choice of chunk.choices) {
      stored += choice.delta.content ?? "";
      finish = choice.finish_reason ?? finish;
    }
  }
  check(stored.length > 0, "empty streamed answer to the store");
  check(finish === "stop", `streamed finish_reason: ${finish}`);

  const question = store.concat([
    { role: "assistant", content: stored },
    { role: "user", content: "what did I store about the boat?" },
  ]);
  const found = await client.chat.completions.create({ model: "memento", messages: question });
  check(found.object === "chat.completion", `object: ${found.object}`);
  check(found.model === "memento", `model: ${found.model}`);
  const answer = found.choices[0].message.content ?? "";
  check(answer.includes("pier 27"), `non-streamed question did not find the store: ${JSON.stringify(answer)}`);
  check(found.choices[0].finish_reason === "stop", `finish_reason: ${found.choices[0].finish_reason}`);
  checkUsage(found.usage, "question");

  const stream = client.chat.completions.stream({
    model: "memento",
    messages: [{ role: "user", content: "what did I store about the boat?" }],
    stream_options: { include_usage: true },
  });
  const completion = await stream.finalChatCompletion();
  const streamed = completion.choices[0].message.content ?? "";
  check(streamed.includes("pier 27"), `streamed question did not find the store: ${JSON.stringify(streamed)}`);
  check(completion.choices[0].finish_reason === "stop", `streamed finish_reason: ${completion.choices[0].finish_reason}`);
  checkUsage(completion.usage, "streamed question");

  // Errors arrive as the SDK's own classes, with OpenAI's codes.
  try {
    await client.chat.completions.create({ model: "gpt-4o", messages: store });
    fail("an unknown model was accepted");
  } catch (error) {
    check(error instanceof OpenAI.NotFoundError, `unknown model: ${error}`);
    check(error.code === "model_not_found", `unknown model code: ${error.code}`);
  }
  const stranger = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-a-real-token", maxRetries: 0 });
  try {
    await stranger.chat.completions.create({ model: "memento", messages: store });
    fail("an unknown token was accepted");
  } catch (error) {
    check(error instanceof OpenAI.AuthenticationError, `unknown token: ${error}`);
    check(error.code === "invalid_api_key", `unknown token code: ${error.code}`);
  }
  console.log("ok");
}

main().catch((error) => fail(error?.stack ?? String(error)));
