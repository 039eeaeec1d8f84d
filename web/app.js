// Memento's web page: sign in, chat (streamed over SSE), and the memories panel.
//
// Plain JavaScript with no build step and no dependency. It talks only to the daemon that
// served it (same origin). The DOM is built with textContent only: nothing a memory, a
// reply or a tool result contains is ever parsed as HTML.
'use strict';

(() => {
  const SESSION_KEY = 'memento.session';
  const PAGE_SIZE = 20;
  const USER_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  /** Who is signed in: the user id, and the bearer token when the daemon wants one. */
  let session = null;
  /** The memories panel: the current search and how many are shown. */
  const listing = { query: '', tags: '', offset: 0 };
  /** The memory open in the detail view, and the list button that opened it. */
  let opened = null;
  let turnInFlight = false;

  // === Talking to the daemon ===

  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function headers(extra) {
    const all = Object.assign({ Accept: 'application/json' }, extra || {});
    if (session && session.token) all.Authorization = 'Bearer ' + session.token;
    return all;
  }

  async function failure(response) {
    let code = 'http_' + response.status;
    let message = response.statusText || 'request failed';
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (_) {
      // Not JSON: keep the status line.
    }
    return new ApiFailure(response.status, code, message);
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(), cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiFailure(0, 'network', 'cannot reach the Memento daemon: ' + error.message);
    }
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  function userPath(rest) {
    return '/v1/users/' + encodeURIComponent(session.user) + rest;
  }

  /** A refused token ends the session: the person signs in again. */
  function handleFailure(error, where) {
    if (error instanceof ApiFailure && error.status === 401) {
      signOut('Your sign-in was refused (' + error.message + '). Sign in again.');
      return;
    }
    announce(where + ': ' + error.message);
  }

  function announce(text) {
    $('status').textContent = text;
  }

  // === Sign-in ===

  async function start() {
    wireEvents();
    const saved = readSession();
    if (saved) {
      session = saved;
      try {
        await api('GET', '/v1/auth/whoami');
        enterWorkspace();
        return;
      } catch (error) {
        session = null;
        forgetSession();
      }
    }
    await showSignIn('');
  }

  async function showSignIn(message) {
    $('workspace').hidden = true;
    $('identity').hidden = true;
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = message;
    let mode = 'token';
    try {
      mode = (await api('GET', '/v1/auth/mode')).mode;
    } catch (error) {
      $('sign-in-error').textContent = error.message;
    }
    $('sign-in-form').dataset.mode = mode;
    if (mode === 'loopback') {
      $('sign-in-help').textContent =
        'This Memento serves this computer only and needs no token: type your user name.';
      $('token-field').hidden = true;
      $('user-field').hidden = false;
      $('user').focus();
    } else {
      $('sign-in-help').textContent = 'Sign in with the access token your Memento operator gave you.';
      $('token-field').hidden = false;
      $('user-field').hidden = true;
      $('token').focus();
    }
  }

  async function signIn(event) {
    event.preventDefault();
    const form = $('sign-in-form');
    const error = $('sign-in-error');
    error.textContent = '';
    const typedUser = $('user').value.trim();
    if (!$('user-field').hidden && !USER_ID.test(typedUser)) {
      error.textContent = 'That user name is not valid: ' + $('user-help').textContent;
      $('user').focus();
      return;
    }
    if (form.dataset.mode !== 'loopback') {
      const token = $('token').value.trim();
      if (!token) {
        error.textContent = 'Type your access token.';
        $('token').focus();
        return;
      }
      session = { token, user: typedUser || null };
      let who;
      try {
        who = await api('GET', '/v1/auth/whoami');
      } catch (failed) {
        session = null;
        error.textContent = failed.status === 401 ? 'That token was refused.' : failed.message;
        $('token').focus();
        return;
      }
      if (who.caller === 'user') {
        session.user = who.user_id;
      } else if (!typedUser) {
        // A service token may act for anyone: ask whom.
        $('user-field').hidden = false;
        error.textContent = 'This token may act for any user: type the user name too.';
        $('user').focus();
        return;
      }
    } else {
      session = { token: null, user: typedUser };
    }
    $('token').value = '';
    saveSession();
    enterWorkspace();
  }

  function signOut(message) {
    session = null;
    forgetSession();
    $('log').replaceChildren();
    $('memory-list').replaceChildren();
    closeDetail(false);
    showSignIn(message || '');
    announce(message ? '' : 'Signed out.');
  }

  // The session lives in this tab only (sessionStorage) and ends with it.
  function readSession() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
      if (saved && typeof saved.user === 'string' && USER_ID.test(saved.user)) return saved;
    } catch (_) {
      // A damaged entry is ignored.
    }
    return null;
  }
  function saveSession() {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  }
  function forgetSession() {
    sessionStorage.removeItem(SESSION_KEY);
  }

  function enterWorkspace() {
    $('sign-in').hidden = true;
    $('workspace').hidden = false;
    $('identity').hidden = false;
    $('identity-name').textContent = session.user;
    announce('Signed in as ' + session.user + '.');
    $('message').focus();
    loadHistory();
    loadTags();
    search(false);
  }

  // === Chat ===

  function addUserMessage(text) {
    const item = el('li', 'message user');
    item.append(el('span', 'who', 'You'), el('div', 'text', text));
    $('log').append(item);
    scrollLog();
  }

  /** An assistant bubble: tool calls (folded) above the reply text. */
  function addAssistantMessage() {
    const item = el('li', 'message assistant');
    const tools = el('div', 'tools');
    const text = el('div', 'text');
    item.append(el('span', 'who', 'Memento'), tools, text);
    $('log').append(item);
    scrollLog();
    return { item, tools, text, calls: new Map() };
  }

  function pretty(value) {
    if (typeof value === 'string') {
      try {
        return JSON.stringify(JSON.parse(value), null, 2);
      } catch (_) {
        return value;
      }
    }
    return JSON.stringify(value, null, 2);
  }

  function addToolCall(bubble, id, name, args) {
    const details = el('details', 'tool');
    const summary = el('summary');
    const label = el('span', 'tool-name', name);
    const state = el('span', 'tool-state', ' · running');
    summary.append('Tool: ', label, state);
    const argsBlock = el('pre', 'tool-args', pretty(args));
    details.append(summary, el('h4', null, 'Arguments'), argsBlock);
    bubble.tools.append(details);
    bubble.calls.set(id, { details, state });
    scrollLog();
    return details;
  }

  function addToolResult(bubble, id, name, args, result, isError) {
    let call = bubble.calls.get(id);
    if (!call) {
      addToolCall(bubble, id, name, args);
      call = bubble.calls.get(id);
    }
    call.state.textContent = isError ? ' · failed' : ' · done';
    if (isError) call.details.classList.add('failed');
    call.details.append(el('h4', null, 'Result'), el('pre', 'tool-result', pretty(result)));
  }

  function scrollLog() {
    const log = $('log');
    log.scrollTop = log.scrollHeight;
  }

  /** Reads a `text/event-stream` body: yields `{event, data}` for each event. */
  async function* serverEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line === '' || line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? '' : line.slice(colon + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') event = val;
          else if (field === 'data') data.push(val);
        }
        if (data.length > 0) yield { event, data: data.join('\n') };
      }
    }
  }

  async function sendMessage(event) {
    event.preventDefault();
    const box = $('message');
    const message = box.value.trim();
    if (!message || turnInFlight) return;
    box.value = '';
    setTurnInFlight(true);
    addUserMessage(message);
    const bubble = addAssistantMessage();
    bubble.item.setAttribute('aria-busy', 'true');
    let changedMemories = false;
    try {
      const response = await fetch(userPath('/messages'), {
        method: 'POST',
        headers: headers({ Accept: 'text/event-stream', 'Content-Type': 'application/json' }),
        body: JSON.stringify({ message }),
        cache: 'no-store',
        credentials: 'omit',
      });
      if (!response.ok) throw await failure(response);
      let finished = false;
      for await (const { event: kind, data } of serverEvents(response.body)) {
        let payload;
        try {
          payload = JSON.parse(data);
        } catch (_) {
          continue;
        }
        if (kind === 'tool_call') {
          addToolCall(bubble, payload.id, payload.name, payload.arguments);
        } else if (kind === 'tool_result') {
          addToolResult(bubble, payload.id, payload.name, payload.arguments, payload.result, payload.is_error);
          if (!payload.is_error && /^(store|delete)_memory$/.test(payload.name)) changedMemories = true;
        } else if (kind === 'text') {
          bubble.text.textContent = payload.text;
        } else if (kind === 'done') {
          finished = true;
          bubble.text.textContent = payload.reply;
          if (payload.trace_id) bubble.item.append(el('span', 'trace', 'trace ' + payload.trace_id));
        } else if (kind === 'error') {
          finished = true;
          const error = payload.error || {};
          throw new ApiFailure(0, error.code, error.message || 'the turn failed');
        }
        scrollLog();
      }
      if (!finished) throw new ApiFailure(0, 'stream_ended', 'the reply stopped before it was complete');
    } catch (error) {
      bubble.item.classList.add('failed');
      bubble.text.textContent = 'Error: ' + error.message;
      if (error instanceof ApiFailure && error.status === 401) handleFailure(error, 'Chat');
    } finally {
      bubble.item.removeAttribute('aria-busy');
      setTurnInFlight(false);
      scrollLog();
      if (session) box.focus();
    }
    if (changedMemories && session) {
      loadTags();
      search(false);
    }
  }

  function setTurnInFlight(busy) {
    turnInFlight = busy;
    $('send').disabled = busy;
    $('send').textContent = busy ? 'Sending…' : 'Send';
    $('log').setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  /** Shows the conversation so far (tool calls folded, as in a live turn). */
  async function loadHistory() {
    let history;
    try {
      history = await api('GET', userPath('/history'));
    } catch (error) {
      handleFailure(error, 'History');
      return;
    }
    const log = $('log');
    log.replaceChildren();
    let bubble = null;
    for (const message of history.messages || []) {
      if (message.role === 'user') {
        addUserMessage(message.content || '');
        bubble = null;
      } else if (message.role === 'assistant') {
        if (!bubble) bubble = addAssistantMessage();
        for (const call of message.tool_calls || []) {
          addToolCall(bubble, call.id, call.function.name, call.function.arguments);
        }
        if (message.content) bubble.text.textContent = message.content;
      } else if (message.role === 'tool' && bubble) {
        const call = bubble.calls.get(message.tool_call_id);
        if (call) addToolResult(bubble, message.tool_call_id, '', '', message.content, /^Error/.test(message.content));
      }
    }
  }

  async function forgetConversation() {
    try {
      await api('DELETE', userPath('/history'));
      $('log').replaceChildren();
      announce('Conversation forgotten; your memories are kept.');
      $('message').focus();
    } catch (error) {
      handleFailure(error, 'Forget conversation');
    }
  }

  // === Memories ===

  async function loadTags() {
    let answer;
    try {
      answer = await api('GET', userPath('/tags'));
    } catch (error) {
      handleFailure(error, 'Tags');
      return;
    }
    const select = $('tag-filter');
    const current = select.value;
    const options = [el('option', null, 'All tags')];
    options[0].value = '';
    for (const { tag, count } of answer.tags || []) {
      const option = el('option', null, tag + ' (' + count + ')');
      option.value = tag;
      options.push(option);
    }
    select.replaceChildren(...options);
    select.value = options.some((o) => o.value === current) ? current : '';
  }

  /** Lists memories for the current search; `more` appends the next page. */
  async function search(more) {
    if (!more) {
      listing.query = $('search').value.trim();
      listing.tags = $('tag-filter').value;
      listing.offset = 0;
    }
    const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(listing.offset) });
    if (listing.query) params.set('query', listing.query);
    if (listing.tags) params.set('tags', listing.tags);
    let answer;
    try {
      answer = await api('GET', userPath('/memories?' + params));
    } catch (error) {
      handleFailure(error, 'Memories');
      return;
    }
    const list = $('memory-list');
    if (!more) list.replaceChildren();
    const memories = answer.memories || [];
    for (const memory of memories) list.append(memoryItem(memory));
    listing.offset += memories.length;
    $('more').hidden = memories.length < PAGE_SIZE;
    const shown = list.children.length;
    const what = listing.query || listing.tags ? ' matching' : '';
    $('memory-count').textContent =
      shown === 0
        ? listing.query || listing.tags
          ? 'No memories match.'
          : 'No memories yet. Ask Memento to remember something.'
        : shown + (memories.length === PAGE_SIZE ? '+' : '') + what + (shown === 1 ? ' memory' : ' memories');
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function tagList(tags) {
    const span = el('span', 'tags');
    for (const tag of tags || []) span.append(el('span', 'tag', tag));
    return span;
  }

  function memoryItem(memory) {
    const item = el('li');
    item.dataset.id = memory.id;
    const open = el('button', 'memory-open', memory.filename);
    open.type = 'button';
    const previewId = 'preview-' + memory.id;
    open.setAttribute('aria-describedby', previewId);
    open.addEventListener('click', () => openMemory(memory.id, open));
    const preview = el('p', 'preview', memory.description || memory.preview);
    preview.id = previewId;
    const meta = el('div', 'meta');
    meta.append(formatTime(memory.created_at) + ' ', tagList(memory.tags));
    item.append(open, preview, meta);
    return item;
  }

  async function openMemory(id, opener) {
    let memory;
    try {
      memory = await api('GET', userPath('/memories/' + encodeURIComponent(id)));
    } catch (error) {
      if (error instanceof ApiFailure && error.status === 404) {
        announce('That memory is gone.');
        search(false);
        return;
      }
      handleFailure(error, 'Open memory');
      return;
    }
    for (const li of $('memory-list').children) li.classList.toggle('selected', li.dataset.id === id);
    opened = { id: memory.id, opener };
    $('detail-title').textContent = memory.filename;
    // The offline model often uses the content itself as the description: show it once.
    $('detail-description').textContent =
      memory.description && memory.description !== memory.content ? memory.description : '';
    $('detail-created').textContent = formatTime(memory.created_at) + ' (' + memory.stored_as + ')';
    $('detail-tags').replaceChildren(memory.tags && memory.tags.length ? tagList(memory.tags) : 'none');
    $('detail-size').textContent = memory.size_bytes + ' bytes';
    $('detail-id').textContent = memory.id;
    $('detail-content').textContent = memory.content;
    showConfirm(false);
    $('memory-detail').hidden = false;
    $('detail-title').focus();
  }

  function closeDetail(restoreFocus) {
    const wasOpen = opened;
    opened = null;
    $('memory-detail').hidden = true;
    showConfirm(false);
    for (const li of $('memory-list').children) li.classList.remove('selected');
    if (restoreFocus && wasOpen && wasOpen.opener && wasOpen.opener.isConnected) wasOpen.opener.focus();
  }

  function showConfirm(show) {
    $('confirm-group').hidden = !show;
    $('delete').hidden = show;
    if (show) $('cancel-delete').focus();
  }

  async function deleteOpened() {
    if (!opened) return;
    const id = opened.id;
    try {
      const answer = await api('DELETE', userPath('/memories/' + encodeURIComponent(id)));
      announce('Deleted ' + (answer.filename || 'the memory') + '.');
    } catch (error) {
      if (!(error instanceof ApiFailure && error.status === 404)) {
        handleFailure(error, 'Delete');
        return;
      }
      announce('That memory was already gone.');
    }
    closeDetail(false);
    await Promise.all([search(false), loadTags()]);
    $('search').focus();
  }

  // === Wiring ===

  function wireEvents() {
    $('sign-in-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut(''));
    $('chat-form').addEventListener('submit', sendMessage);
    $('message').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $('chat-form').requestSubmit();
      }
    });
    $('forget-chat').addEventListener('click', forgetConversation);
    $('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      closeDetail(false);
      search(false);
    });
    $('tag-filter').addEventListener('change', () => {
      closeDetail(false);
      search(false);
    });
    $('refresh').addEventListener('click', () => {
      loadTags();
      search(false);
    });
    $('more').addEventListener('click', () => search(true));
    $('delete').addEventListener('click', () => showConfirm(true));
    $('cancel-delete').addEventListener('click', () => {
      showConfirm(false);
      $('delete').focus();
    });
    $('confirm-delete').addEventListener('click', deleteOpened);
    $('close-detail').addEventListener('click', () => closeDetail(true));
    $('memory-detail').addEventListener('keydown', (event) => {
      if (event.key === 'Escape') closeDetail(true);
    });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
