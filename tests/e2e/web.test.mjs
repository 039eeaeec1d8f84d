// Memento's web page, end to end: a real `memento serve` (offline model, temporary data
// directory, a free port it picks itself) and Debian's Chromium, headless, driven by
// playwright-core. Loopback mode: a person types a user name, stores a note through the
// chat, sees it in the memories panel, filters by tag, finds it by search, opens it and
// deletes it, all with the keyboard, then checks the phone-sized layout. Token mode: a wrong
// token is refused, the right one signs in, streamed turns carry it, a reload keeps the
// session and shows the history, signing out forgets it. A screenshot of every step goes to
// target/e2e-artifacts/ (or $MEMENTO_E2E_ARTIFACTS) as loopback-NN-*.png and token-NN-*.png.
//
// Run: `bash tests/e2e/run.sh` (installs what it needs), or `npm test` here with
// MEMENTO_BIN pointing at a built `memento` and Chromium at /usr/bin/chromium.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const binary = process.env.MEMENTO_BIN || path.join(root, 'target/debug/memento');
const artifacts = process.env.MEMENTO_E2E_ARTIFACTS || path.join(root, 'target/e2e-artifacts');
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const USER = 'e2e-alice';
// Generous: CI shares two cores between the browser, the daemon and cargo's leftovers.
const STEP_TIMEOUT_MS = 60_000;

/** Starts `memento serve --port 0` and reads the address it prints first. */
function startDaemon(dataDir, extraArgs = []) {
  const env = { ...process.env, RUST_LOG: 'warn', MEMENTO_LLM__PROVIDER: 'offline' };
  for (const name of Object.keys(env)) {
    if (name.startsWith('AZURE_OPENAI') || name.startsWith('OTEL_') || name === 'MEMENTO_CONFIG') {
      delete env[name];
    }
  }
  const child = spawn(
    binary,
    ['serve', '--port', '0', '--mcp-port', '0', '--data-dir', dataDir, ...extraArgs],
    { cwd: root, env, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`memento serve printed no address within ${STEP_TIMEOUT_MS} ms`));
    }, STEP_TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${binary}: ${error.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`memento serve exited early (code ${code}, signal ${signal})`));
    });
    // Every line is read, so the daemon never blocks on a full pipe.
    const lines = readline.createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      const match = line.match(/listening on (http:\/\/\S+)/);
      if (match) resolve({ child, url: match[1] });
      else reject(new Error(`unexpected first line from memento serve: ${line}`));
    });
  });
}

async function stopDaemon(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * A daemon (with `extraArgs`) and a headless Chromium page, both stopped when test `t` ends,
 * plus the helpers every scenario uses. Screenshots are named `<prefix>-NN-<step>.png`.
 */
async function launch(t, prefix, extraArgs = []) {
  assert.ok(existsSync(binary), `no memento binary at ${binary}: run cargo build first`);
  assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}: apt-get install chromium`);
  mkdirSync(artifacts, { recursive: true });
  const dataDir = mkdtempSync(path.join(tmpdir(), 'memento-e2e-'));
  const { child, url } = await startDaemon(dataDir, extraArgs);
  t.after(async () => {
    await stopDaemon(child);
    rmSync(dataDir, { recursive: true, force: true });
  });
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: CHROMIUM_ARGS });
  t.after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  // Console errors include Content-Security-Policy violations and failed requests.
  const consoleErrors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  let step = 0;
  const shot = async (name) => {
    step += 1;
    const file = path.join(artifacts, `${prefix}-${String(step).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
  };
  const failed = () =>
    page.screenshot({ path: path.join(artifacts, `${prefix}-failure.png`), fullPage: true }).catch(() => {});
  return { url, page, consoleErrors, shot, failed };
}

const focusedId = (page) => page.evaluate(() => document.activeElement && document.activeElement.id);
const turnFinished = (page) =>
  page.waitForFunction(() => {
    const log = document.getElementById('log');
    return log.getAttribute('aria-busy') === 'false' && !log.querySelector('[aria-busy="true"]');
  });
const listTexts = (page) =>
  page.locator('#memory-list li').evaluateAll((items) => items.map((li) => li.textContent));

test('a person chats, sees, searches and deletes a memory in the browser', async (t) => {
  const { url, page, consoleErrors, shot, failed } = await launch(t, 'loopback');
  try {
    // The page, with its security headers.
    const response = await page.goto(url + '/');
    assert.equal(response.status(), 200);
    const headers = response.headers();
    assert.match(headers['content-security-policy'], /default-src 'self'/);
    assert.match(headers['content-security-policy'], /frame-ancestors 'none'/);
    assert.equal(headers['x-content-type-options'], 'nosniff');

    // Loopback mode: the page asks for a user name and has focused the field.
    await page.getByLabel('User name').waitFor();
    assert.equal(await focusedId(page), 'user');
    await shot('sign-in');
    await page.keyboard.type(USER);
    await page.keyboard.press('Enter');
    await page.getByText(`Signed in as ${USER}`, { exact: false }).first().waitFor();
    assert.equal(await focusedId(page), 'message');

    // Store two notes through the chat (the second one makes the search meaningful).
    await page.keyboard.type('Remember this: my bike lock code is 4711');
    await page.keyboard.press('Enter');
    await turnFinished(page);
    const reply = page.locator('#log .message.assistant').last();
    const call = reply.locator('details.tool');
    assert.equal(await call.count(), 1);
    assert.equal(await call.locator('.tool-name').textContent(), 'store_memory');
    assert.equal(await call.getAttribute('open'), null, 'tool calls start folded');
    assert.match(await call.locator('summary').textContent(), /done/);
    assert.match(await reply.locator('.text').textContent(), /stored/i);
    // Unfold it with the keyboard to show the arguments and the result.
    await call.locator('summary').focus();
    await page.keyboard.press('Enter');
    assert.notEqual(await call.getAttribute('open'), null);
    assert.match(await call.locator('.tool-args').textContent(), /4711/);
    await shot('stored-through-chat');

    await page.locator('#message').focus();
    await page.keyboard.type('Remember this: buy oat milk and coffee on Friday');
    await page.keyboard.press('Enter');
    await turnFinished(page);

    // Both appear in the panel, newest first.
    await page.waitForFunction(() => document.querySelectorAll('#memory-list li').length === 2);
    const listed = await listTexts(page);
    assert.match(listed[0], /oat milk/);
    assert.match(listed[1], /bike lock/);
    await shot('in-the-panel');

    // The tag filter offers the tags in use, and filters by one.
    const bikeTags = await page.evaluate(async (user) => {
      const answer = await fetch(`/v1/users/${user}/memories?query=bike`).then((r) => r.json());
      return answer.memories[0].tags;
    }, USER);
    const milkTags = await page.evaluate(async (user) => {
      const answer = await fetch(`/v1/users/${user}/memories?query=milk`).then((r) => r.json());
      return answer.memories[0].tags;
    }, USER);
    const bikeOnly = bikeTags.find((tag) => !milkTags.includes(tag));
    assert.ok(bikeOnly, `the bike note has a tag of its own: ${bikeTags} vs ${milkTags}`);
    await page.locator('#tag-filter').focus();
    await page.locator('#tag-filter').selectOption(bikeOnly);
    await page.waitForFunction(() => document.querySelectorAll('#memory-list li').length === 1);
    assert.match((await listTexts(page))[0], /bike lock/);
    await shot('tag-filter');
    await page.locator('#tag-filter').selectOption('');
    await page.waitForFunction(() => document.querySelectorAll('#memory-list li').length === 2);

    // Search finds the bike note only.
    await page.getByRole('searchbox', { name: 'Search' }).focus();
    await page.keyboard.type('bike lock');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => {
      const items = document.querySelectorAll('#memory-list li');
      return items.length === 1 && items[0].textContent.includes('bike lock');
    });
    await shot('found-by-search');

    // Open it with the keyboard: the detail view shows the whole content and takes focus.
    await page.locator('#memory-list li button.memory-open').first().focus();
    await page.keyboard.press('Enter');
    await page.locator('#memory-detail').waitFor({ state: 'visible' });
    assert.equal(await focusedId(page), 'detail-title');
    assert.match(await page.locator('#detail-content').textContent(), /my bike lock code is 4711/);
    await shot('opened');

    // Delete asks first (focus on "Keep it"); Shift+Tab reaches "Yes, delete it".
    await page.getByRole('button', { name: 'Delete', exact: true }).focus();
    await page.keyboard.press('Enter');
    assert.equal(await focusedId(page), 'cancel-delete');
    await shot('confirm-delete');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focusedId(page), 'confirm-delete');
    await page.keyboard.press('Enter');
    await page.locator('#memory-detail').waitFor({ state: 'hidden' });
    await page.getByText('No memories match.').waitFor();
    await shot('deleted');

    // The daemon agrees: the bike note is gone, the other one stays.
    const after = await page.evaluate(async (user) => {
      const answer = await fetch(`/v1/users/${user}/memories`).then((r) => r.json());
      return answer.memories.map((m) => m.preview);
    }, USER);
    assert.equal(after.length, 1);
    assert.match(after[0], /oat milk/);

    // Phone-sized: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('searchbox', { name: 'Search' }).fill('');
    await page.getByRole('searchbox', { name: 'Search' }).press('Enter');
    await page.waitForFunction(() => document.querySelectorAll('#memory-list li').length === 1);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone screen`);
    await shot('phone');

    assert.deepEqual(consoleErrors, [], 'no console errors (CSP violations, failed requests)');
  } catch (error) {
    await failed();
    throw error;
  }
});

test('with tokens, a person signs in with theirs, and the session survives a reload', async (t) => {
  const configDir = mkdtempSync(path.join(tmpdir(), 'memento-e2e-config-'));
  t.after(() => rmSync(configDir, { recursive: true, force: true }));
  const config = path.join(configDir, 'memento.toml');
  writeFileSync(config, '[auth]\n[auth.user_tokens]\nbob = "bob-token-e2e-1234"\n');
  const { url, page, consoleErrors, shot, failed } = await launch(t, 'token', ['--config', config]);

  try {
    await page.goto(url + '/');
    // Token mode: the page asks for a token, focused, and hides the user name.
    await page.getByLabel('Access token').waitFor();
    assert.equal(await focusedId(page), 'token');
    assert.equal(await page.locator('#user').isVisible(), false);

    // A wrong token is refused in words, and focus stays on the field.
    await page.keyboard.type('not-the-token');
    await page.keyboard.press('Enter');
    await page.getByText('That token was refused.').waitFor();
    assert.equal(await focusedId(page), 'token');
    await shot('refused');

    // The right one signs bob in: the daemon says whose token it is.
    await page.locator('#token').fill('bob-token-e2e-1234');
    await page.keyboard.press('Enter');
    await page.locator('#identity-name', { hasText: 'bob' }).waitFor();
    assert.equal(await focusedId(page), 'message');

    // Streamed turns carry the token: store, then ask.
    await page.keyboard.type('Remember this: the spare key is under the blue pot');
    await page.keyboard.press('Enter');
    await turnFinished(page);
    await page.waitForFunction(() => document.querySelectorAll('#memory-list li').length === 1);
    await page.keyboard.type('what do you remember about the spare key?');
    await page.keyboard.press('Enter');
    await turnFinished(page);
    const answer = page.locator('#log .message.assistant').last();
    assert.equal(await answer.locator('.tool-name').textContent(), 'retrieve_memories');
    assert.match(await answer.locator('.text').textContent(), /blue pot/);

    // A reload keeps the sign-in (this tab only) and shows the conversation from history,
    // tool calls folded.
    await page.reload();
    await page.locator('#identity-name', { hasText: 'bob' }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('#log .message').length === 4);
    const tools = await page
      .locator('#log details.tool .tool-name')
      .evaluateAll((names) => names.map((n) => n.textContent));
    assert.deepEqual(tools, ['store_memory', 'retrieve_memories']);
    assert.equal(await page.locator('#log details.tool[open]').count(), 0);
    await shot('after-reload');

    // Signing out forgets the token: the sign-in form is back, and a reload keeps it there.
    await page.getByRole('button', { name: 'Sign out' }).focus();
    await page.keyboard.press('Enter');
    await page.getByLabel('Access token').waitFor();
    await page.reload();
    await page.getByLabel('Access token').waitFor();
    assert.equal(await page.locator('#workspace').isVisible(), false);
    await shot('signed-out');

    // The refused token's 401 is the only failed request the console may mention.
    const unexpected = consoleErrors.filter((text) => !/401 \(Unauthorized\)/.test(text));
    assert.deepEqual(unexpected, [], 'no console errors but the refused token');
  } catch (error) {
    await failed();
    throw error;
  }
});
