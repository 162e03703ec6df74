// custos officer console (docs/console.md): one page, a hash router, plain
// DOM. The page's Content-Security-Policy allows only this script and
// app.css: no inline code, no eval, no other host. Server data is only ever
// set as text (textContent, text nodes, attributes), never parsed as HTML.
'use strict';

const OUTCOMES = { ALLOW: 'Allowed', DENY: 'Denied', PENDING: 'Pending approval' };
const REASONS = ['CUSTOMER_INITIATED', 'CUSTOMER_WORKFLOW', 'PROVIDER_SERVICE', 'PROVIDER_SUPPORT',
  'THIRD_PARTY_DATA_REQUEST', 'EMERGENCY', 'UNSPECIFIED'];
const HOUR = 3600 * 1000;

const state = {
  session: null,  // GET /api/session
  overview: null, // GET /api/overview, refreshed with the pages that need it
  uv: '',         // the user verification the node asked for at sign-in
  chartBy: 'outcome', // the evidence chart's bars: 'outcome' or 'reason'
  hourly: [],     // the evidence chart's data, to redraw it when chartBy changes
  route: '',
  loadSeq: 0,     // the newest page load; older answers are dropped
  lastData: '',   // JSON of what the page shows, to skip identical re-renders
  busy: false,    // an action is in flight
  disarm: null,   // puts back the button confirmFirst armed, if one is
  stale: false,   // a live update waits until the officer stops editing
  keepStatus: false,
  loadError: false,
  events: null, poll: null, retry: null, liveTimer: null,
  filters: { key: '', principal: '', reason: '', outcome: '' },
};

// ---- DOM helpers -----------------------------------------------------------

function $(sel, root) { return (root || document).querySelector(sel); }

// el('td', {class: 'x', 'data-key': k, onclick: fn}, 'text', child, [more]).
// Attribute values and text children are set as text, never as HTML.
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(3)) {
    if (kid === undefined || kid === null || kid === false || kid === '') continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- words, times, base64url -------------------------------------------------

const plural = (n, one, many) => `${n} ${n === 1 ? one : (many || one + 's')}`;
// words('THIRD_PARTY_DATA_REQUEST') = 'Third party data request'.
function words(s) {
  const w = String(s || '').replace(/_/g, ' ').toLowerCase().trim();
  return w ? w[0].toUpperCase() + w.slice(1) : '';
}
const reasonWords = (r) => (r === 'THIRD_PARTY_DATA_REQUEST' ? 'Third-party data request' : words(r));
const OPERATIONS = { GOVERNANCE: 'Officer statement', DECRYPT_DATA_KEY: 'Decrypt data key', REENCRYPT: 'Re-encrypt' };
const operationWords = (op) => OPERATIONS[op] || words(op);

function utc(d) { return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC'); }
// when shows a time in the officer's local time, with UTC on hover.
function when(iso) {
  const d = new Date(iso || '');
  if (!iso || isNaN(d)) return el('span', { class: 'muted' }, '—');
  return el('time', { datetime: iso, title: utc(d) },
    d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }));
}
// duration(5400) = '1 hour 30 minutes'.
function duration(s) {
  if (!Number.isFinite(s) || s <= 0) return '';
  const parts = [[86400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']]
    .map(([n, w]) => { const k = Math.floor(s / n); s -= k * n; return k ? plural(k, w) : ''; }).filter(Boolean);
  return parts.slice(0, 2).join(' ');
}

function fromB64u(s) {
  const b = atob(String(s).replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '='));
  return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
}
function toB64u(buf) {
  let s = '';
  for (const x of new Uint8Array(buf)) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// ---- status, errors, the API -----------------------------------------------

class ApiError extends Error {
  constructor(message, code, status) { super(message); this.code = code; this.status = status; }
}

// What a browser's WebAuthn errors mean to an officer.
const WEBAUTHN_ERRORS = {
  NotAllowedError: 'The security key request was cancelled or timed out. Nothing was signed.',
  AbortError: 'The security key request was cancelled. Nothing was signed.',
  InvalidStateError: 'This security key is already registered for this officer.',
  SecurityError: 'The browser refused to use a security key for this address: open the console at its official address (the name the officers registered their keys for).',
  NotSupportedError: 'This security key cannot make the kind of key custos needs (ES256 / P-256).',
  ConstraintError: 'This security key cannot check a PIN or fingerprint, which is required here.',
};

function errorText(e) {
  if (e instanceof ApiError) return e.code ? `${e.message} (${e.code})` : e.message;
  if (e instanceof DOMException) return WEBAUTHN_ERRORS[e.name] || `The security key reported a problem: ${e.message}`;
  return (e && e.message) || String(e);
}

function status(text, kind) {
  const s = $('#status');
  s.textContent = text || '';
  s.className = `status${text ? ' ' + (kind || 'info') : ''}`;
}

// api calls the console's API: JSON both ways, the session cookie, and the
// CSRF token on every POST. Errors ({"error","code"}) become ApiErrors.
async function api(path, body) {
  const init = { method: body === undefined ? 'GET' : 'POST', credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-Custos-CSRF'] = (state.session && state.session.csrf) || '';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (_) {
    throw new ApiError('The console cannot reach the custos node. Check the network connection and try again.', 'Unavailable', 0);
  }
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON: reported below */ }
  if (!res.ok) {
    const err = new ApiError((data && data.error) || `The node answered ${res.status} ${res.statusText}.`, (data && data.code) || '', res.status);
    if (res.status === 401 && signedIn()) {
      err.sessionEnded = true; // signedOut says so; callers keep that message
      signedOut('Your session has ended. Please sign in again.');
    }
    throw err;
  }
  if (!data || typeof data !== 'object') throw new ApiError('The node sent an answer this page cannot read.', 'Internal', res.status);
  return data;
}

// act runs an officer's action: every button disabled while it is in
// flight, the outcome or the error in #status, then the page re-read.
async function act(button, fn) {
  if (state.busy) return;
  state.busy = true;
  const route = state.route;
  const buttons = [...document.querySelectorAll('button')].filter((b) => !b.disabled);
  buttons.forEach((b) => { b.disabled = true; });
  button.classList.add('working');
  button.setAttribute('aria-busy', 'true');
  try {
    await fn();
    if (state.route === route && ROUTES[route].fetch) await refresh(false);
  } catch (e) {
    if (!e.sessionEnded) status(errorText(e), 'error');
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    button.classList.remove('working');
    button.removeAttribute('aria-busy');
    state.busy = false;
    resumeLive();
  }
}

// ---- WebAuthn ---------------------------------------------------------------

function needWebAuthn() {
  if (!window.PublicKeyCredential || !navigator.credentials) {
    throw new Error('This browser cannot use security keys (WebAuthn). Use a current Chrome, Edge, Firefox or Safari, at the console\'s https:// address.');
  }
}

// assertion asks the security key to sign challenge (b64u) and returns the
// assertion as the API takes it.
async function assertion(challenge, rpId, ids, uv) {
  needWebAuthn();
  const cred = await navigator.credentials.get({ publicKey: {
    challenge: fromB64u(challenge), rpId, timeout: 60000, userVerification: uv || 'preferred',
    allowCredentials: (ids || []).map((id) => ({ type: 'public-key', id: fromB64u(id) })),
  } });
  if (!cred) throw new Error('The security key gave no answer. Nothing was signed.');
  const r = cred.response;
  return { credential_id: toB64u(cred.rawId), authenticator_data: toB64u(r.authenticatorData),
    client_data_json: toB64u(r.clientDataJSON), signature: toB64u(r.signature) };
}

// uvWanted is the user verification to ask the security key for: required
// if the caller needs it, else what the node's session says it wants
// (user_verification), else what it asked for at sign-in.
function uvWanted(required) {
  if (required) return 'required';
  const s = state.session && state.session.user_verification;
  if (s === 'required' || s === 'preferred') return s;
  return state.uv === 'required' ? 'required' : 'preferred';
}

function me() { return state.session && state.session.officer; }
function signedIn() { return !!me(); }
function officerNames() { return state.overview ? state.overview.officers.map((o) => o.name) : []; }

// myCredentials are the signed-in officer's security keys (from /api/overview).
async function myCredentials() {
  if (!state.overview) state.overview = await api('/api/overview');
  const o = state.overview.officers.find((x) => x.name === me());
  return o ? o.credentials : [];
}

// signBox shows what is about to be signed ('ask'), what failed to be
// signed ('failed'), or nothing (null).
function signBox(kind, description) {
  const box = $('#sign-box');
  box.hidden = !kind;
  box.className = `signbox ${kind || ''}`;
  if (description !== undefined) $('#sign-description').textContent = description;
  $('#sign-title').textContent = kind === 'failed' ? 'Not signed' : 'You are about to sign';
  $('#sign-hint').textContent = kind === 'failed' ? 'Nothing was added for this statement; the reason is shown above.'
    : 'Read it. If it is what you mean, touch your security key (or give its PIN or fingerprint) when the browser asks.';
}

// progress says how far a proposal is: "1 of 2 signatures — waiting for: bob or carol".
function progress(p) {
  const signers = p.signers || [];
  const left = Math.max(0, p.needed - signers.length);
  const others = officerNames().filter((n) => !signers.includes(n));
  const head = `${signers.length} of ${plural(p.needed, 'signature')}`;
  if (!left) return head;
  if (!others.length) return `${head} — ${left} more needed`;
  if (left >= others.length) return `${head} — waiting for: ${others.join(' and ')}`;
  if (left === 1) return `${head} — waiting for: ${others.join(' or ')}`;
  return `${head} — waiting for: ${left} more of ${others.join(', ')}`;
}

// signStatement shows the statement's description, has the security key
// sign its digest, and adds the signature on the cluster.
async function signStatement(st) {
  signBox('ask', st.description);
  status('Waiting for your security key…', 'info');
  try {
    const creds = await myCredentials();
    const uv = uvWanted(creds.some((c) => c.user_verification));
    const a = await assertion(st.challenge, state.session.rp_id, creds.map((c) => c.id), uv);
    status('Sending your signature…', 'info');
    const res = await api('/api/proposals/sign', { statement: st.statement, assertion: a });
    signBox(null);
    if (res.applied) {
      const a2 = res.applied;
      status(`Done: ${a2.result}. Signed by ${(a2.signers || []).join(', ')}; ledger record ${a2.ledger_seq}.` +
        (a2.grant_id ? ` Grant ${a2.grant_id}.` : ''), 'ok');
    } else if (res.proposal) {
      status(`Your signature is recorded. ${progress(res.proposal)}.`, 'ok');
    } else {
      status('Your signature was sent.', 'ok');
    }
    return res;
  } catch (e) {
    signBox('failed');
    throw e;
  }
}

// prepareAndSign has the node prepare a statement (with the page's note for
// the record, if any), then signs it.
async function prepareAndSign(params) {
  const note = $('#action-comment');
  const comment = note ? note.value.trim() : '';
  const st = await api('/api/statements', comment ? { ...params, comment } : params);
  return signStatement(st);
}

// descField reads name="value" out of a proposal's description
// (governance.Describe quotes strings with Go's %q).
function descField(p, name) {
  const m = String(p.description || '').match(new RegExp(`\\b${name}="((?:[^"\\\\]|\\\\.)*)"`));
  if (!m) return '';
  try { return JSON.parse(`"${m[1]}"`); } catch (_) { return m[1]; }
}

// waitingFor finds a proposal already waiting for the same operation on the
// same target: officers must sign that one, not start a second.
function waitingFor(proposals, op, field, value) {
  return (proposals || []).find((p) => p.operation === op && descField(p, field) === value);
}

// ---- session and chrome -----------------------------------------------------

async function loadSession() {
  state.session = await api('/api/session');
  if (signedIn()) {
    try { state.overview = await api('/api/overview'); } catch (e) { state.overview = null; }
    startEvents();
  } else {
    state.overview = null;
    stopEvents();
  }
  updateChrome();
}

function updateChrome() {
  const s = state.session || {};
  document.body.classList.toggle('signed-in', signedIn());
  $('#whoami').textContent = s.officer || '';
  const o = state.overview;
  const parts = [`Cluster ${String(s.cluster_id || '?').slice(0, 12)}`, `node ${s.node || '?'}`];
  if (o) parts.push(`${plural(o.officers.length, 'officer')}, ${o.quorum} must sign to approve`);
  if (s.version) parts.push(`custos ${s.version}`);
  const t = $('#context-text');
  t.textContent = parts.join(' · ');
  t.title = `Cluster ${s.cluster_id || ''}`;
  // The genesis fingerprint, which auditors pin: shortened by the style
  // sheet, but the element holds all of it (select, copy, tooltip).
  const g = $('#genesis');
  $('#context-genesis').hidden = !s.genesis;
  g.textContent = s.genesis || '';
  g.title = s.genesis ? `Genesis fingerprint (SHA-256): ${s.genesis}` : '';
}

// copyGenesis puts the whole genesis fingerprint on the clipboard; where the
// browser refuses, it selects it for the officer to copy.
async function copyGenesis(ev) {
  const button = ev.currentTarget;
  const value = (state.session && state.session.genesis) || '';
  let copied = false;
  try {
    if (navigator.clipboard && value) { await navigator.clipboard.writeText(value); copied = true; }
  } catch (_) { /* refused: select it instead */ }
  if (!copied) window.getSelection().selectAllChildren($('#genesis'));
  button.textContent = copied ? 'Copied' : 'Selected: press Ctrl+C';
  clearTimeout(button.resetTimer);
  button.resetTimer = setTimeout(() => { button.textContent = 'Copy'; }, 2500);
}

function setLive(mode) {
  const l = $('#live');
  l.hidden = !mode;
  l.className = `live-indicator ${mode || ''}`;
  l.textContent = { live: 'Live', polling: 'Checking every 3 s', paused: 'Updates wait while you edit' }[mode] || '';
}

function signedOut(message) {
  if (state.session) state.session.officer = '';
  state.overview = null;
  stopEvents();
  updateChrome();
  status(message, 'error');
  state.keepStatus = true;
  navigate('signin');
  loadSession().catch(() => {}); // a fresh session and CSRF token for the next sign-in
}

// ---- live updates -----------------------------------------------------------

// The node sends "change" whenever the ledger head or the proposals move;
// the page then re-reads what it shows. If the stream fails, poll every 3 s
// and try the stream again after 30 s.
function startEvents() {
  if (state.events || state.poll) return;
  if (!window.EventSource) { startPolling(); return; }
  const es = new EventSource('/api/events');
  state.events = es;
  es.addEventListener('open', () => setLive(state.stale ? 'paused' : 'live'));
  es.addEventListener('change', liveSoon);
  es.addEventListener('error', () => {
    es.close();
    if (state.events !== es) return;
    state.events = null;
    if (signedIn()) startPolling();
  });
}

function startPolling() {
  if (state.poll) return;
  setLive('polling');
  state.poll = setInterval(liveSoon, 3000);
  state.retry = setTimeout(() => { stopEvents(); if (signedIn()) startEvents(); }, 30000);
}

function stopEvents() {
  if (state.events) state.events.close();
  clearInterval(state.poll);
  clearTimeout(state.retry);
  state.events = state.poll = state.retry = null;
  setLive(null);
}

function liveSoon() {
  clearTimeout(state.liveTimer);
  state.liveTimer = setTimeout(() => refresh(true), 150);
}

// editing: the officer is typing in, or has opened, something a re-render
// would throw away.
function editing() {
  if ($('#main details.editor[open], #main .armed')) return true;
  const a = document.activeElement;
  return !!(a && a.closest && a.closest('.live') && a.matches('input, textarea, select'));
}

function resumeLive() {
  if (state.stale && !state.busy && !editing()) {
    state.stale = false;
    setLive(state.events ? 'live' : state.poll ? 'polling' : null);
    refresh(true);
  }
}

// ---- routing ------------------------------------------------------------------

function navigate(route) {
  if (location.hash === `#/${route}`) show();
  else location.hash = `#/${route}`;
}

function currentRoute() {
  const name = location.hash.replace(/^#\/?/, '');
  if (!Object.prototype.hasOwnProperty.call(ROUTES, name)) return signedIn() ? 'pending' : 'signin';
  if (!ROUTES[name].open && !signedIn()) return 'signin';
  if (name === 'signin' && signedIn()) return 'pending';
  return name;
}

function show() {
  const r = currentRoute();
  if (location.hash !== `#/${r}`) history.replaceState(null, '', `#/${r}`);
  if (!state.keepStatus) status('');
  state.keepStatus = false;
  if (r !== state.route) window.scrollTo(0, 0); // a new page starts at its top
  state.route = r;
  state.lastData = '';
  state.stale = false;
  signBox(null);
  if (state.disarm) state.disarm();
  document.title = `${ROUTES[r].title} — custos officer console`;
  for (const a of document.querySelectorAll('.nav a')) {
    if (a.id === `nav-${r}`) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const main = $('#main');
  main.replaceChildren(ROUTES[r].build());
  const first = $('#main input');
  if (ROUTES[r].open && first) first.focus(); else main.focus({ preventScroll: true });
  refresh(false);
}

// refresh re-reads the page's data and re-renders it when it changed. A
// live refresh waits while an action runs or the officer is editing.
async function refresh(live) {
  const r = state.route;
  const page = ROUTES[r];
  if (!page || !page.fetch || !signedIn()) return;
  const deferred = () => {
    if (!live || !(state.busy || editing())) return false;
    state.stale = true;
    setLive('paused');
    return true;
  };
  if (deferred()) return;
  const seq = ++state.loadSeq;
  let data;
  try {
    data = await page.fetch();
  } catch (e) {
    if (seq !== state.loadSeq || e.status === 401) return;
    if (!live || !state.loadError) status(`This page could not be loaded: ${errorText(e)}`, 'error');
    state.loadError = true;
    return;
  }
  if (seq !== state.loadSeq || r !== state.route || deferred()) return;
  if (state.loadError) {
    state.loadError = false;
    if ($('#status').textContent.startsWith('This page could not be loaded')) status('');
  }
  const json = JSON.stringify(data);
  if (json === state.lastData) return;
  state.lastData = json;
  page.fill(data);
}

function table(id, headings, extra) {
  return el('div', { class: 'table-wrap live' }, el('table', { id, class: 'grid', ...extra },
    el('thead', {}, el('tr', {}, headings.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, el('tr', {}, el('td', { colspan: headings.length, class: 'empty' }, 'Loading…')))));
}
function fillBody(id, rows, cols, empty) {
  $(`#${id} tbody`).replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: cols, class: 'empty' }, empty))]));
}
function pageHead(title, lead) {
  return el('header', { class: 'pagehead' }, el('h1', {}, title), lead ? el('p', { class: 'lead' }, lead) : null);
}
function commentField() {
  return el('label', { class: 'field comment' }, 'Note for the record (optional, added to what you sign)',
    el('input', { id: 'action-comment', maxlength: 500, placeholder: 'e.g. the ticket number, and why' }));
}

// ---- sign in and register -----------------------------------------------------

function buildSignin() {
  const name = el('input', { id: 'signin-officer', autocomplete: 'username', autocapitalize: 'off', spellcheck: 'false', required: true });
  const button = el('button', { id: 'signin-button', type: 'submit', class: 'btn primary wide' }, 'Sign in with security key');
  return el('form', { class: 'card narrow', novalidate: true,
    onsubmit: (ev) => { ev.preventDefault(); act(button, () => signIn(name.value.trim())); } },
  el('h1', {}, 'Sign in'),
  el('p', { class: 'lead' }, 'Enter your officer name, then touch the security key registered to it.'),
  el('label', { class: 'field' }, 'Officer name', name), button,
  el('p', { class: 'aside' }, 'No security key yet, or a new one? ',
    el('a', { id: 'nav-register', href: '#/register' }, 'Register a security key')));
}

async function signIn(officer) {
  if (!officer) throw new Error('Enter your officer name.');
  needWebAuthn();
  await loadSession(); // the current CSRF token (an old session may have expired)
  const begin = await api('/api/signin/begin', { officer });
  status('Touch your security key to sign in…', 'info');
  const a = await assertion(begin.challenge, begin.rp_id, begin.credential_ids, uvWanted(begin.user_verification === 'required'));
  const fin = await api('/api/signin/finish', { officer, assertion: a });
  state.session.csrf = fin.csrf;
  state.uv = begin.user_verification || '';
  await loadSession();
  if (!signedIn()) throw new Error('The node did not keep the sign-in. Please try again.');
  status(`Signed in as ${me()}.`, 'ok');
  state.keepStatus = true;
  navigate('pending');
}

function buildRegister() {
  const name = el('input', { id: 'register-officer', autocomplete: 'username', autocapitalize: 'off', spellcheck: 'false', required: true });
  const enrolment = el('textarea', { id: 'register-enrolment', rows: 2, autocapitalize: 'off', spellcheck: 'false', required: true,
    class: 'mono', placeholder: 'the code custos officer enrol printed' });
  const label = el('input', { id: 'register-label', maxlength: 100, placeholder: 'e.g. alice\'s blue YubiKey' });
  const uv = el('input', { id: 'register-uv', type: 'checkbox' });
  const button = el('button', { id: 'register-button', type: 'submit', class: 'btn primary wide' }, 'Register security key');
  const result = el('div', { id: 'register-result', hidden: true });
  return el('div', { class: 'narrow' }, result, el('form', { class: 'card', novalidate: true,
    onsubmit: (ev) => { ev.preventDefault(); act(button, () => register(name.value.trim(), enrolment.value.trim(), label.value.trim(), uv.checked, result)); } },
  el('h1', {}, 'Register a security key'),
  el('ol', { class: 'steps' },
    el('li', {}, 'On your own machine, run ', el('code', {}, 'custos officer enrol --officer NAME --officer-key KEYFILE'),
      ' with your officer key; it prints your enrolment code (valid one hour).'),
    el('li', {}, 'Enter your officer name, paste the code, and give a label that tells your keys apart.'),
    el('li', {}, 'Touch the key twice when the browser asks: once to create it, once to sign the request with it.'),
    el('li', {}, 'The other officers approve the registration. Then you can sign in with the key.')),
  el('label', { class: 'field' }, 'Officer name', name),
  el('label', { class: 'field' }, 'Enrolment code', enrolment),
  el('label', { class: 'field' }, 'Label for this key', label),
  el('label', { class: 'check' }, uv, 'Always require the key\'s PIN or fingerprint'),
  button,
  el('p', { class: 'aside' }, el('a', { href: '#/signin' }, 'Back to sign in'))));
}

async function register(officer, enrolment, label, requireUV, result) {
  if (!officer) throw new Error('Enter your officer name.');
  if (!enrolment) throw new Error('Paste your enrolment code (custos officer enrol prints it).');
  needWebAuthn();
  result.hidden = true;
  await loadSession();
  const b = await api('/api/register/begin', { officer, enrolment });
  status('Touch your security key to create the new credential…', 'info');
  const cred = await navigator.credentials.create({ publicKey: {
    challenge: fromB64u(b.challenge), rp: { id: b.rp_id, name: b.rp_name },
    user: { id: fromB64u(b.user_id), name: b.user_name, displayName: b.user_name },
    pubKeyCredParams: [{ type: 'public-key', alg: -7 }], authenticatorSelection: { userVerification: uvWanted(requireUV) },
    attestation: 'none', timeout: 60000,
    excludeCredentials: (b.exclude_credentials || []).map((id) => ({ type: 'public-key', id: fromB64u(id) })),
  } });
  if (!cred) throw new Error('The security key gave no answer. Nothing was registered.');
  // getPublicKey() gives the key as SPKI DER (ES256 only, as asked above).
  const spki = typeof cred.response.getPublicKey === 'function' ? cred.response.getPublicKey() : null;
  if (!spki) throw new Error('This browser does not give the new key\'s public key. Use a current Chrome, Edge, Firefox or Safari.');
  const id = toB64u(cred.rawId);
  // challenge: the one register/begin gave (and create() used), so that the
  // node knows this statement follows its own begin, for this officer.
  const st = await api('/api/register/statement', { officer, challenge: b.challenge, label: label || `${officer}'s security key`,
    credential_id: id, public_key: toB64u(spki), require_user_verification: requireUV });
  signBox('ask', st.description);
  status('Touch your security key again to sign the registration request…', 'info');
  let proof;
  try {
    proof = await assertion(st.challenge, b.rp_id, [id], uvWanted(requireUV));
  } catch (e) { signBox('failed'); throw e; }
  const res = await api('/api/register/finish', { statement: st.statement, proof });
  signBox(null);
  const p = res.proposal || {};
  const pid = p.id || st.id;
  const left = Math.max(0, (p.needed || st.needed) - (p.signers || []).length);
  result.replaceChildren(el('section', { class: 'card success' },
    el('h2', {}, 'Registration sent for approval'),
    el('p', {}, 'Registration proposal ', el('code', { id: 'register-proposal-id' }, pid), ` waits for ${plural(left, 'officer signature')}.`),
    el('p', {}, 'Officers who sign with a key file run:'),
    el('pre', { class: 'cli' }, `custos officer sign-proposal --officer NAME --officer-key KEYFILE ${pid}`),
    el('p', { class: 'muted' }, 'Officers signed in to this console can sign it under Pending requests. Once it has enough signatures, sign in with this key.')));
  result.hidden = false;
  status(`Registration proposal ${pid} created.`, 'ok');
}

// ---- pending requests and proposals -----------------------------------------

function buildPending() {
  return el('section', {},
    pageHead('Pending requests', 'Requests to use a key that its policy holds for the officers. Approving needs the quorum of officers; one officer can deny.'),
    commentField(),
    table('pending-requests', ['Request', 'Reason', 'Asked', 'Approved by', 'Decision']),
    el('h2', {}, 'Statements waiting for signatures'),
    el('p', { class: 'lead' }, 'Each needs more officers to sign the same statement. Read the description before you sign.'),
    el('ul', { id: 'proposals', class: 'proposals live' }, el('li', { class: 'empty' }, 'Loading…')));
}

async function fetchPending() {
  const [pending, overview] = await Promise.all([api('/api/pending'), api('/api/overview')]);
  state.overview = overview;
  return { pending, overview };
}

function fillPending({ pending }) {
  updateChrome();
  fillBody('pending-requests', pending.requests.map(requestRow), 5, 'No requests are waiting.');
  const items = pending.proposals.map(proposalItem);
  $('#proposals').replaceChildren(...(items.length ? items : [el('li', { class: 'empty' }, 'No statements are waiting for signatures.')]));
}

function requestRow(q) {
  const p = q.proposal; // the approval already proposed for it, if any
  const approvals = q.approvals || [];
  const mine = approvals.includes(me());
  const uses = el('input', { class: 'uses', type: 'number', min: 1, step: 1, value: 1, inputmode: 'numeric' });
  const ttl = el('input', { class: 'ttl', type: 'number', min: 1, step: 60, value: 3600, inputmode: 'numeric' });
  const ttlWords = el('span', { class: 'hint' }, duration(3600));
  ttl.addEventListener('input', () => { ttlWords.textContent = duration(Number(ttl.value)); });
  if (p) {
    // The terms are those of the approval already proposed (uses=N ttl=1h0m0s).
    const m = /uses=(\d+) ttl=(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?/.exec(p.description || '');
    if (m) {
      uses.value = m[1];
      ttl.value = (Number(m[2] || 0) * 3600) + (Number(m[3] || 0) * 60) + Number(m[4] || 0) || 3600;
      ttlWords.textContent = duration(Number(ttl.value));
    }
    uses.disabled = ttl.disabled = true;
    uses.title = ttl.title = 'Set by the approval already proposed';
  }
  const approve = el('button', { type: 'button', class: 'approve btn primary', disabled: mine }, mine ? 'You approved' : 'Approve');
  const deny = el('button', { type: 'button', class: 'deny btn danger' }, 'Deny');
  approve.addEventListener('click', () => act(approve, async () => {
    if (p) return signStatement(p);
    const n = Number(uses.value), s = Number(ttl.value);
    if (!Number.isInteger(n) || n < 1) throw new Error('"Uses" must be a whole number, 1 or more.');
    if (!Number.isInteger(s) || s < 1) throw new Error('"Valid for" must be a whole number of seconds.');
    return prepareAndSign({ operation: 'approve_request', request_id: q.request_id, uses: n, ttl_seconds: s });
  }));
  deny.addEventListener('click', () => act(deny, () => prepareAndSign({ operation: 'deny_request', request_id: q.request_id })));
  const needed = p ? p.needed : (state.overview && state.overview.quorum);
  const short = (hex) => el('span', { class: 'mono', title: hex }, hex ? `${hex.slice(0, 16)}…` : '—');
  return el('tr', { 'data-request-id': q.request_id },
    el('td', {}, el('div', { class: 'strong' }, q.principal),
      el('div', {}, 'key ', el('strong', {}, q.key), q.key_version ? ` (version ${q.key_version})` : ''),
      el('div', { class: 'small muted' }, 'Request ', el('span', { class: 'mono' }, q.request_id)),
      el('div', { class: 'small muted' }, 'Context ', short(q.context_digest)),
      el('div', { class: 'small muted' }, 'Data ', short(q.data_digest))),
    el('td', {}, el('span', { class: 'badge reason' }, reasonWords(q.reason)),
      el('div', { class: 'justification' }, q.justification || 'No justification given'),
      q.ticket ? el('div', { class: 'small muted' }, `Ticket ${q.ticket}`) : null),
    el('td', { class: 'small' }, when(q.create_time), el('div', { class: 'muted' }, 'Expires ', when(q.expire_time))),
    el('td', { class: 'approvals' }, approvals.length ? approvals.join(', ') : 'No one yet',
      needed ? el('div', { class: 'small muted' }, `${approvals.length} of ${needed}`) : null),
    el('td', { class: 'decision' },
      el('div', { class: 'terms' },
        el('label', { class: 'mini' }, 'Uses', uses),
        el('label', { class: 'mini' }, 'Valid for (seconds)', ttl, ttlWords)),
      el('div', { class: 'buttons' }, approve, deny)));
}

// TITLES: what a proposal does, in words, and the description field that
// names its target.
const TITLES = {
  approve_request: ['Approve request', 'request'], deny_request: ['Deny request', 'request'],
  revoke_key: ['Revoke key', 'key'], disable_key: ['Disable key', 'key'], enable_key: ['Re-enable key', 'key'],
  set_policy: ['Change the policy of key', 'key'], admit_node: ['Admit node', 'node'],
  add_officer_credential: ['Register a security key for', 'officer'],
  remove_officer_credential: ['Remove a security key of', 'officer'],
};

function proposalItem(p) {
  const signers = p.signers || [];
  const signed = signers.includes(me());
  const t = TITLES[p.operation];
  const title = t ? `${t[0]} ${descField(p, t[1])}`.trim() : words(p.operation);
  const sign = el('button', { type: 'button', class: 'sign btn primary', disabled: signed }, signed ? 'You signed' : 'Sign');
  sign.addEventListener('click', () => act(sign, () => signStatement(p)));
  return el('li', { class: 'proposal', 'data-proposal-id': p.id },
    el('div', { class: 'proposal-main' },
      el('h3', {}, title, ' ', el('span', { class: 'muted small mono' }, p.id)),
      el('p', { class: 'description' }, p.description),
      el('p', { class: 'progress' }, progress(p)),
      el('p', { class: 'small muted' }, 'Signed by: ', el('span', { class: 'signers' }, signers.join(', ') || 'no one yet'),
        ' · needs ', el('span', { class: 'needed' }, p.needed), ' · proposed by ', p.proposer || '—', ' ', when(p.create_time),
        ' · expires ', when(p.expire_time))),
    el('div', { class: 'proposal-action' }, sign));
}

// ---- keys ------------------------------------------------------------------------

function buildKeys() {
  return el('section', {},
    pageHead('Keys', 'One officer can stop a key at once: revoke it, or disable it for a planned pause. Re-enabling a key or changing its policy needs the quorum of officers.'),
    commentField(),
    table('keys', ['Key', 'State', 'Versions', 'Policy', 'Actions']));
}

async function fetchKeys() {
  const [keys, pending] = await Promise.all([api('/api/keys'), api('/api/pending')]);
  return { keys, proposals: pending.proposals };
}

function fillKeys({ keys, proposals }) {
  fillBody('keys', keys.keys.map((k) => keyRow(k, proposals)), 5, 'No keys yet.');
}

// confirmFirst makes an immediate one-officer action take two clicks: the
// first turns the button into confirmLabel, with a Cancel button and the
// warning below it; a second click within CONFIRM_MS runs the action, else
// the button goes back. Live updates wait while a button is armed, and only
// one is armed at a time.
const CONFIRM_MS = 6000;
function confirmFirst(button, confirmLabel, warning, run) {
  const label = button.textContent;
  const cancel = el('button', { type: 'button', class: 'cancel btn secondary' }, 'Cancel');
  const note = el('p', { class: 'confirm-note', role: 'status' });
  let timer = null;
  const disarm = (focus) => {
    clearTimeout(timer);
    if (state.disarm === disarm) state.disarm = null;
    button.classList.remove('armed');
    button.textContent = label;
    cancel.remove();
    note.remove();
    if (focus) button.focus();
    setTimeout(resumeLive);
  };
  cancel.addEventListener('click', () => disarm(true));
  button.addEventListener('click', (ev) => {
    if (!button.classList.contains('armed')) {
      if (state.disarm) state.disarm();
      state.disarm = disarm;
      button.classList.add('armed');
      button.textContent = confirmLabel;
      button.after(cancel, note);
      setTimeout(() => { note.textContent = warning; }); // after insertion, so screen readers announce it
      timer = setTimeout(() => disarm(false), CONFIRM_MS);
    } else if (ev.detail <= 1) { // the second click of a double click confirms nothing
      disarm(false);
      act(button, run);
    }
  });
  return button;
}

function keyRow(k, proposals) {
  const quorum = state.overview ? state.overview.quorum : 'the quorum of';
  const enableP = waitingFor(proposals, 'enable_key', 'key', k.name);
  const policyP = waitingFor(proposals, 'set_policy', 'key', k.name);
  const button = (cls, label, style, allowed, why, run) => {
    const b = el('button', { type: 'button', class: `${cls} btn ${style}`, disabled: !allowed, title: allowed ? null : why }, label);
    b.addEventListener('click', () => act(b, run));
    return b;
  };
  // Revoke and disable: one officer, at once; so they ask to be confirmed.
  const stop = (cls, label, style, allowed, why, verb, warning, op) => {
    const b = el('button', { type: 'button', class: `${cls} btn ${style}`, disabled: !allowed, title: allowed ? null : why }, label);
    return confirmFirst(b, `Confirm ${verb} of ${k.name}`, warning, () => prepareAndSign({ operation: op, key: k.name }));
  };
  const mineEnable = enableP && (enableP.signers || []).includes(me());
  const live = !['revoked', 'destroyed'].includes(k.state);
  const area = el('textarea', { class: 'policy-json', rows: 14, spellcheck: 'false', 'aria-label': `Policy of ${k.name} (JSON)` });
  area.value = JSON.stringify(k.policy || {}, null, 2);
  const propose = el('button', { type: 'button', class: 'propose-policy btn primary' }, 'Sign and propose');
  propose.addEventListener('click', () => act(propose, async () => {
    let policy;
    try { policy = JSON.parse(area.value); } catch (e) { throw new Error(`The policy is not valid JSON: ${e.message}`); }
    return prepareAndSign({ operation: 'set_policy', key: k.name, policy });
  }));
  return el('tr', { 'data-key': k.name },
    el('td', {}, el('div', { class: 'strong' }, k.name), k.description ? el('div', { class: 'small muted' }, k.description) : null),
    el('td', {}, el('span', { class: `state badge state-${k.state}` }, k.state.replace(/_/g, ' '))),
    el('td', { class: 'versions small' },
      el('div', {}, `Primary: version ${k.primary_version}`), el('div', {}, `Decrypts from version ${k.min_decryption_version}`),
      el('ul', { class: 'plain muted' }, (k.versions || []).map((v) =>
        el('li', { title: v.key_check_value ? `key check value ${v.key_check_value}` : null }, `v${v.version} ${v.state} · `, when(v.create_time))))),
    el('td', {}, el('ul', { class: 'plain policy' }, (k.policy_words || []).map((w) => el('li', {}, w))),
      policyP ? el('p', { class: 'note' }, `A policy change waits for signatures: ${progress(policyP)}.`) : null,
      k.state === 'destroyed' ? null : el('details', { class: 'policy-editor editor' },
        el('summary', {}, `Change this policy (needs ${quorum} officers)`),
        el('p', { class: 'small muted' }, 'Edit the policy as JSON, as for custos key policy set. Your signature is the first; the change applies when enough officers have signed it under Pending requests.'),
        area, propose)),
    el('td', { class: 'actions' },
      stop('revoke', 'Revoke key', 'danger', live, 'This key is already stopped', 'revoke',
        `Every use of ${k.name} stops at once. Re-enabling it needs ${quorum} officers.`, 'revoke_key'),
      stop('disable', 'Disable', 'secondary', k.state === 'enabled', 'Only an enabled key can be disabled', 'disable',
        `No one can use ${k.name} until it is re-enabled, which needs ${quorum} officers.`, 'disable_key'),
      button('enable', mineEnable ? 'You asked to re-enable' : 'Re-enable', 'secondary',
        ['disabled', 'revoked'].includes(k.state) && !mineEnable, 'Only a disabled or revoked key can be re-enabled',
        () => (enableP ? signStatement(enableP) : prepareAndSign({ operation: 'enable_key', key: k.name }))),
      enableP ? el('p', { class: 'small muted' }, `Re-enable: ${progress(enableP)}`) : null));
}

// ---- evidence ----------------------------------------------------------------------

function localInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

// rfc3339 reads "2026-01-31 14:00" (local), "2026-01-31" or an RFC 3339 time.
function rfc3339(v, label) {
  v = v.trim();
  if (!v) return '';
  const d = new Date(/^\d{4}-\d{2}-\d{2}$/.test(v) ? `${v}T00:00` : v.replace(' ', 'T'));
  if (isNaN(d)) throw new Error(`${label}: write a date and time such as ${localInput(new Date())} (your local time).`);
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function reportQuery() {
  const q = new URLSearchParams();
  const since = rfc3339($('#report-since').value, 'From'), until = rfc3339($('#report-until').value, 'Until');
  if (since) q.set('since', since);
  if (until) q.set('until', until);
  if ($('#report-key').value.trim()) q.set('key', $('#report-key').value.trim());
  return q;
}

function updateDownload() {
  const link = $('#report-download');
  try {
    const q = reportQuery();
    q.set('download', '1');
    link.setAttribute('href', `/api/report?${q}`);
    link.classList.remove('disabled');
  } catch (_) {
    link.removeAttribute('href'); // fixed by the officer; #report-show says what is wrong
    link.classList.add('disabled');
  }
}

function buildEvidence() {
  const f = state.filters;
  const input = (id, key, label, ph) => el('label', { class: 'field' }, label, el('input', { id, value: f[key], placeholder: ph, spellcheck: 'false' }));
  const select = (id, key, label, options) => el('label', { class: 'field' }, label,
    el('select', { id }, options.map(([v, w]) => el('option', { value: v, selected: f[key] === v }, w))));
  const apply = el('button', { id: 'filter-apply', type: 'submit', class: 'btn primary' }, 'Apply filters');
  const clear = el('button', { type: 'button', class: 'btn secondary', onclick: () => {
    for (const id of ['filter-key', 'filter-principal', 'filter-reason', 'filter-outcome']) $(`#${id}`).value = '';
    applyFilters();
  } }, 'Clear');
  const show = el('button', { id: 'report-show', type: 'submit', class: 'btn primary' }, 'Show report');
  const since = new Date(Date.now() - 30 * 24 * HOUR);
  since.setHours(0, 0, 0, 0);
  const section = el('section', {},
    pageHead('Evidence', 'What the ledger recorded: every decision on a key and every officer statement. The chain check shows that no record was altered or removed.'),
    el('div', { class: 'evidence-top' },
      el('section', { class: 'card chart-card', 'aria-labelledby': 'chart-title' },
        el('div', { class: 'chart-head' }, el('h2', { id: 'chart-title' }, 'Decisions per hour'),
          el('div', { id: 'chart-by', class: 'toggle', role: 'group', 'aria-label': 'Stack the bars by' },
            [['outcome', 'By outcome'], ['reason', 'By reason']].map(([by, label]) => el('button',
              { type: 'button', id: `chart-by-${by}`, 'data-by': by, 'aria-pressed': String(state.chartBy === by), onclick: () => chartBy(by) }, label)))),
        el('div', { id: 'chart', class: 'live' }, el('p', { class: 'empty' }, 'Loading…'))),
      el('section', { id: 'chain', class: 'card chain live' }, el('h2', {}, 'Ledger chain'), el('p', { class: 'muted' }, 'Checking…'))),
    el('form', { class: 'filters card', novalidate: true, onsubmit: (ev) => { ev.preventDefault(); applyFilters(); } },
      input('filter-key', 'key', 'Key', 'any key'), input('filter-principal', 'principal', 'Principal', 'anyone'),
      select('filter-reason', 'reason', 'Reason', [['', 'Any reason'], ...REASONS.map((r) => [r, reasonWords(r)])]),
      select('filter-outcome', 'outcome', 'Outcome', [['', 'Any outcome'], ...Object.entries(OUTCOMES)]),
      el('div', { class: 'filter-buttons' }, apply, clear)),
    table('timeline', ['Time', 'Outcome', 'What happened', 'Principal', 'Key', 'Reason', 'Signed by', 'Record']),
    el('p', { id: 'timeline-note', class: 'small muted' }),
    el('h2', {}, 'Disclosure report'),
    el('p', { class: 'lead' }, 'What was released, refused and held, to whom and why, for a period — the report to give the data owner.'),
    el('form', { class: 'filters card', novalidate: true, onsubmit: (ev) => { ev.preventDefault(); act(show, showReport); } },
      el('label', { class: 'field' }, 'From (your local time)', el('input', { id: 'report-since', value: localInput(since), placeholder: 'YYYY-MM-DD HH:MM' })),
      el('label', { class: 'field' }, 'Until (empty: now)', el('input', { id: 'report-until', placeholder: 'now' })),
      el('label', { class: 'field' }, 'Key (empty: every key)', el('input', { id: 'report-key', placeholder: 'every key', spellcheck: 'false' })),
      el('div', { class: 'filter-buttons' }, show,
        el('a', { id: 'report-download', class: 'btn secondary', download: 'custos-disclosure-report.txt' }, 'Download report'))),
    el('p', { id: 'report-period', class: 'small muted' }),
    el('pre', { id: 'report', class: 'report' }));
  section.addEventListener('input', (ev) => { if (ev.target.id && ev.target.id.startsWith('report-')) updateDownload(); });
  setTimeout(updateDownload);
  return section;
}

function applyFilters() {
  state.filters = { key: $('#filter-key').value.trim(), principal: $('#filter-principal').value.trim(),
    reason: $('#filter-reason').value, outcome: $('#filter-outcome').value };
  state.lastData = '';
  refresh(false);
}

async function showReport() {
  const q = reportQuery();
  const r = await api(`/api/report?${q}`);
  $('#report').textContent = r.text || 'The report is empty.';
  $('#report-period').textContent = `Report from ${r.since || 'the first record'} until ${r.until || 'now'} (UTC).`;
  status('The disclosure report is shown below.', 'ok');
}

async function fetchEvidence() {
  const q = new URLSearchParams({ limit: '200' });
  for (const [k, v] of Object.entries(state.filters)) if (v) q.set(k, v);
  const [decisions, chain] = await Promise.all([api(`/api/decisions?${q}`), api('/api/chain')]);
  return { decisions, chain };
}

function fillEvidence({ decisions, chain }) {
  state.hourly = decisions.hourly || [];
  $('#chart').replaceChildren(chart(state.hourly, state.chartBy));
  fillChain(chain);
  const recs = decisions.records || [];
  fillBody('timeline', recs.map((r) => el('tr', { 'data-seq': r.seq },
    el('td', { class: 'nowrap small' }, when(r.time)),
    el('td', {}, el('span', { class: `badge outcome-${String(r.outcome).toLowerCase()}` }, OUTCOMES[r.outcome] || words(r.outcome))),
    el('td', {}, el('div', {}, operationWords(r.operation)), el('div', { class: 'small muted detail' }, r.detail || r.matched_rule)),
    el('td', {}, r.principal), el('td', {}, r.key || '—'),
    el('td', {}, r.reason && r.reason !== 'UNSPECIFIED' ? reasonWords(r.reason) : '—'),
    el('td', {}, (r.signers || []).join(', ') || '—'),
    el('td', { class: 'mono small' }, r.seq))), 8, 'No decisions match these filters.');
  $('#timeline-note').textContent = recs.length >= 200 ? 'Showing the newest 200 records. Narrow the filters to see older ones.' : '';
}

function fillChain(c) {
  const ok = !!c.verified;
  const box = $('#chain');
  box.className = `card chain live ${ok ? 'chain-ok' : 'chain-bad'}`;
  const w = c.witness;
  box.replaceChildren(el('h2', {}, 'Ledger chain'),
    el('p', { class: 'chain-verdict' }, el('span', { class: 'mark', 'aria-hidden': 'true' }, ok ? '✓' : '✗'), 'Chain ', el('span', { class: 'verified' }, ok ? 'verified' : 'NOT verified')),
    el('p', { class: 'small' }, `${plural(c.records || 0, 'record')} checked` +
      (c.verified_through !== undefined ? ` through record ${c.verified_through}` : '') +
      (c.checkpoints !== undefined ? `, ${plural(c.checkpoints, 'signed checkpoint')}` : '') + '.'),
    el('p', { class: 'small' }, `Head${c.seq !== undefined ? ` (record ${c.seq})` : ''}: `, el('code', { class: 'head', title: c.head }, c.head || '—')),
    el('p', { class: 'small witness' }, w ? ['Witnessed by ', el('strong', {}, w.name), ` up to record ${w.seq}, `, when(w.time)] : 'No witness has cosigned the ledger yet.'),
    el('ul', { class: 'problems', hidden: !(c.problems || []).length }, (c.problems || []).map((p) => el('li', {}, p))));
}

// CHART_BY: the evidence chart's two ways to stack its bars. series are
// the keys in stacking order (all: every one in the legend; otherwise only
// those with decisions), of is the key an hourly count belongs to.
const CHART_BY = {
  outcome: { series: Object.keys(OUTCOMES), all: true, of: (h) => h.outcome,
    label: (k) => OUTCOMES[k] || 'Other' },
  reason: { series: REASONS, all: false, of: (h) => h.reason || 'UNSPECIFIED',
    label: (k) => (k === 'OTHER' ? 'Other' : reasonWords(k)) },
};

// chart draws decisions per hour as stacked bars by outcome or by reason
// (CHART_BY[by]), over at least the last 24 hours and at most 7 days, in
// local time, with a legend above the bars (wrapped onto more rows if long).
function chart(hourly, by) {
  const mode = CHART_BY[by] || CHART_BY.outcome;
  const buckets = new Map(); // hour (ms) → { series key → count }
  for (const h of hourly) {
    const t = Date.parse(h.hour);
    if (isNaN(t)) continue;
    const b = buckets.get(t) || {};
    const k = mode.series.includes(mode.of(h)) ? mode.of(h) : 'OTHER';
    b[k] = (b[k] || 0) + (Number(h.count) || 0);
    buckets.set(t, b);
  }
  const count = (b, k) => (b && b[k]) || 0;
  const sum = (k) => [...buckets.values()].reduce((s, b) => s + count(b, k), 0);
  const series = [...mode.series, 'OTHER'].filter((k) => (mode.all && k !== 'OTHER') || sum(k) > 0);
  const said = (b) => series.filter((k) => count(b, k)).map((k) => `${count(b, k)} ${mode.label(k).toLowerCase()}`).join(', ') || 'none';

  const times = [...buckets.keys()].sort((a, b) => a - b);
  const now = Math.floor(Date.now() / HOUR) * HOUR;
  const last = times.length ? times[times.length - 1] : now;
  const end = now - last <= 24 * HOUR ? Math.max(now, last) : last;
  const start = Math.max(Math.min(times.length ? times[0] : end, end - 23 * HOUR), end - 167 * HOUR);
  const n = Math.round((end - start) / HOUR) + 1;
  const total = (b) => series.reduce((s, k) => s + count(b, k), 0);
  let max = 0;
  for (let i = 0; i < n; i++) max = Math.max(max, total(buckets.get(start + i * HOUR)));
  // A round step for at most 4 gridlines (1, 2, 5, 10, 20…), the top a multiple of it.
  let step = 1;
  for (let i = 1; step * 4 < max; i++) step = [1, 2, 5][i % 3] * 10 ** Math.floor(i / 3);
  const top = Math.max(1, Math.ceil(max / step) * step);

  const W = 760, H = 250, L = 44, R = 10, B = 42;
  // The legend first: it decides where the plot starts. Label widths are
  // estimated (12px text), with room to spare.
  const legend = [];
  let lx = L, row = 0;
  for (const k of series) {
    const label = mode.label(k), w = 34 + label.length * 7;
    if (lx > L && lx + w - 14 > W - R) { lx = L; row++; }
    legend.push(svg('rect', { x: lx, y: 8 + row * 20, width: 12, height: 12, rx: 2, class: `seg-${k.toLowerCase()}` }),
      svg('text', { x: lx + 18, y: 18 + row * 20, class: 'legend' }, label));
    lx += w;
  }
  const T = 34 + row * 20, pw = W - L - R, ph = H - T - B;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img',
    'aria-label': `Decisions per hour by ${by === 'reason' ? 'reason' : 'outcome'}: ${said(Object.fromEntries(series.map((k) => [k, sum(k)])))}` });
  root.append(...legend);
  const y = (v) => T + ph - (ph * v) / top;
  for (let v = 0; v <= top; v += step) {
    root.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: v ? 'gridline' : 'axis' }),
      svg('text', { x: L - 8, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, String(v)));
  }
  const slot = pw / n, bw = Math.max(2, Math.min(36, slot * 0.72)), every = Math.ceil(n / 12);
  let lastDay = '';
  for (let i = 0; i < n; i++) {
    const t = start + i * HOUR, b = buckets.get(t), d = new Date(t), x = L + i * slot + (slot - bw) / 2;
    const g = svg('g', { class: 'bar' });
    g.append(svg('title', {}, `${d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })}: ${said(b)}`));
    let acc = 0;
    for (const k of series) {
      const v = count(b, k);
      if (!v) continue;
      g.append(svg('rect', { x, y: y(acc + v), width: bw, height: Math.max(1, y(acc) - y(acc + v)), class: `seg-${k.toLowerCase()}` }));
      acc += v;
    }
    root.append(g);
    if (i % every === 0) {
      const cx = L + i * slot + slot / 2, day = d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
      root.append(svg('text', { x: cx, y: H - B + 16, class: 'tick', 'text-anchor': 'middle' },
        d.toLocaleTimeString(undefined, { hour: 'numeric', minute: '2-digit' })));
      if (day !== lastDay) root.append(svg('text', { x: cx, y: H - B + 31, class: 'tick day', 'text-anchor': 'middle' }, day));
      lastDay = day;
    }
  }
  if (!max) root.append(svg('text', { x: L + pw / 2, y: T + ph / 2, class: 'nodata', 'text-anchor': 'middle' }, 'No decisions in this period'));
  return root;
}

// chartBy switches the evidence chart between outcome and reason and
// redraws it from the data it already has.
function chartBy(by) {
  state.chartBy = by;
  for (const b of document.querySelectorAll('#chart-by button')) b.setAttribute('aria-pressed', String(b.dataset.by === by));
  $('#chart').replaceChildren(chart(state.hourly, by));
}

// ---- cluster ------------------------------------------------------------------

function buildCluster() {
  return el('section', {},
    pageHead('Cluster', 'The nodes that hold this cluster\'s keys, which of them may hold the domain key, and the officers who govern it.'),
    el('div', { id: 'cluster-stats', class: 'stats live' }),
    el('h2', {}, 'Nodes'), table('nodes', ['Node', 'Address', 'Role', 'Leader', 'Admitted', 'HSM']),
    el('h2', {}, 'Node admissions'),
    el('p', { class: 'lead' }, 'A node that offered its transport key waits for the officers to admit it (quorum). Before you sign, have the node\'s operator read you its fingerprints, from the node itself, and type them in.'),
    table('admissions', ['Node', 'State', 'Transport key fingerprint', 'Identity key fingerprint', 'Approval']),
    el('h2', {}, 'Officers'), table('officers', ['Officer', 'Officer key fingerprint', 'Security keys']));
}

async function fetchCluster() {
  const [cluster, overview, pending] = await Promise.all([api('/api/cluster'), api('/api/overview'), api('/api/pending')]);
  state.overview = overview;
  return { cluster, overview, proposals: pending.proposals };
}

function fillCluster({ cluster: c, overview: o, proposals }) {
  updateChrome();
  const stat = (label, value) => el('div', { class: 'stat' }, el('div', { class: 'stat-label' }, label), el('div', { class: 'stat-value' }, value));
  $('#cluster-stats').replaceChildren(stat('Leader', c.leader || 'none elected'), stat('This node', c.node || state.session.node || '—'),
    stat('Ledger records', c.ledger_seq !== undefined ? c.ledger_seq : o.ledger_seq),
    stat('Officers', `${o.quorum} of ${o.officers.length} must sign`), stat('State machine', `version ${c.state_machine_version}`));
  fillBody('nodes', (c.nodes || []).map((n) => el('tr', { 'data-node': n.id },
    el('td', { class: 'strong' }, n.id, n.id === c.node ? el('span', { class: 'tag' }, 'this node') : null),
    el('td', { class: 'mono small' }, n.address), el('td', {}, words(n.suffrage)),
    el('td', {}, el('span', { class: `leader badge ${n.leader ? 'badge-ok' : 'badge-plain'}` }, n.leader ? 'Leader' : 'Follower')),
    el('td', {}, el('span', { class: `admitted badge ${n.admitted ? 'badge-ok' : 'badge-warn'}` }, n.admitted ? 'Admitted' : 'Not admitted')),
    el('td', {}, el('span', { class: `hsm badge ${!n.hsm ? 'badge-plain' : n.hsm === 'ok' ? 'badge-ok' : 'badge-bad'}`,
      title: n.hsm ? null : 'Only the node this console runs on reports its HSM' }, n.hsm || 'not reported')))), 6, 'No nodes reported.');
  fillBody('admissions', (c.admissions || []).map((a) => el('tr', { 'data-admission': a.node },
    el('td', { class: 'strong' }, a.node), el('td', {}, el('span', { class: `badge admission-${String(a.state).toLowerCase()}` }, words(a.state))),
    el('td', { class: 'mono small wrap' }, a.transport_key_fingerprint || '—'),
    el('td', { class: 'mono small wrap' }, a.identity_key_fingerprint || '—'),
    el('td', { class: 'approval' }, a.state === 'OFFERED' ? admitForm(a, waitingFor(proposals, 'admit_node', 'node', a.node))
      : el('span', { class: 'muted' }, '—')))), 5, 'No admissions recorded.');
  fillBody('officers', o.officers.map((x) => el('tr', { 'data-officer': x.name },
    el('td', { class: 'strong' }, x.name, x.name === me() ? el('span', { class: 'tag' }, 'you') : null),
    el('td', { class: 'mono small wrap' }, x.fingerprint || '—'),
    el('td', {}, x.credentials.length ? el('ul', { class: 'plain credentials' }, x.credentials.map(credentialItem))
      : el('span', { class: 'muted' }, 'None: signs with a key file only')))), 3, 'No officers.');
}

// credentialItem shows one security key of an officer: its label, its
// credential id and the SHA-256 of its public key (public_key_sha256, if the
// node gives it), each shortened with the whole value on hover.
function credentialItem(cr) {
  const pk = typeof cr.public_key_sha256 === 'string' ? cr.public_key_sha256 : '';
  return el('li', { 'data-credential': cr.id }, el('strong', {}, cr.label || 'Security key'),
    cr.user_verification ? el('span', { class: 'tag' }, 'PIN or fingerprint') : null,
    el('div', { class: 'small muted' },
      'credential ', el('span', { class: 'mono', title: cr.id }, `${cr.id.slice(0, 12)}…`),
      pk ? [' · public key ', el('span', { class: 'mono public-key', title: `SHA-256 of the public key: ${pk}` }, `${pk.slice(0, 16)}…`)] : null));
}

// fingerprint reads a typed fingerprint the way the node does (no spaces or
// colons, lower case).
const fingerprint = (v) => String(v || '').replace(/[\s:]/g, '').toLowerCase();

// admitForm approves a node's admission (admit_node, quorum). The officer
// types the fingerprints the node's operator read to them; the page refuses
// to sign when they differ from what the node offered (or, if an admission
// is already proposed, from what that proposal says, which is then the
// statement signed: one proposal per node).
function admitForm(a, p) {
  const mine = p && (p.signers || []).includes(me());
  const proposed = p ? {
    transport: (/\btransport_key=([0-9a-f]+)/.exec(p.description || '') || [])[1] || '',
    identity: (/\bidentity_key=([0-9a-f]+)/.exec(p.description || '') || [])[1] || '',
    hash: /SHA1\b/.test((/\boaep=(\S+)/.exec(p.description || '') || [])[1] || '') ? 'sha1' : 'sha256',
  } : null;
  const tk = el('input', { class: 'transport-key mono', spellcheck: 'false', autocomplete: 'off', placeholder: '64 hex digits' });
  const ik = el('input', { class: 'identity-key mono', spellcheck: 'false', autocomplete: 'off', placeholder: '32 hex digits' });
  const hash = el('select', { class: 'oaep', disabled: !!p, title: p ? 'Set by the admission already proposed' : null },
    el('option', { value: 'sha256', selected: !p || proposed.hash === 'sha256' }, 'RSA-OAEP with SHA-256'),
    el('option', { value: 'sha1', selected: p && proposed.hash === 'sha1' }, 'RSA-OAEP with SHA-1 (development clusters only)'));
  const go = el('button', { type: 'button', class: 'admit btn primary', disabled: mine }, mine ? 'You signed' : p ? 'Sign this admission' : 'Sign admission');
  go.addEventListener('click', () => act(go, async () => {
    const t = fingerprint(tk.value), i = fingerprint(ik.value);
    if (!/^[0-9a-f]{64}$/.test(t)) throw new Error('Type the transport key fingerprint the node\'s operator read to you: 64 hex digits.');
    if (!/^[0-9a-f]{32}$/.test(i)) throw new Error('Type the identity key fingerprint the node\'s operator read to you: 32 hex digits.');
    const want = p ? proposed : { transport: fingerprint(a.transport_key_fingerprint), identity: fingerprint(a.identity_key_fingerprint) };
    const what = p ? `the admission already proposed for ${a.node}` : `the key node ${a.node} offered`;
    if (want.transport && t !== want.transport) throw new Error(`The transport key fingerprint you typed is not that of ${what} (${want.transport.slice(0, 16)}…). Do not sign: ask the operator again; the node may have restarted with a new key.`);
    if (want.identity && i !== want.identity) throw new Error(`The identity key fingerprint you typed is not that of ${what} (${want.identity}). Do not sign: ask the operator again.`);
    if (p) return signStatement(p);
    return prepareAndSign({ operation: 'admit_node', node: a.node, transport_key_fingerprint: t, identity_key_fingerprint: i, hash: hash.value });
  }));
  const quorum = state.overview ? state.overview.quorum : 'the quorum of';
  return el('div', { class: 'admit' },
    p ? el('p', { class: 'note' }, `An admission waits for signatures: ${progress(p)}.`) : null,
    el('details', { class: 'admit-editor editor' },
      el('summary', {}, p ? 'Check and sign the admission' : `Approve admission (needs ${quorum} officers)`),
      el('label', { class: 'field' }, 'Transport key fingerprint', tk),
      el('label', { class: 'field' }, 'Identity key fingerprint', ik),
      el('label', { class: 'field' }, 'Key transport', hash),
      go));
}

// ---- start -----------------------------------------------------------------------

const ROUTES = {
  signin: { title: 'Sign in', open: true, build: buildSignin },
  register: { title: 'Register a security key', open: true, build: buildRegister },
  pending: { title: 'Pending requests', build: buildPending, fetch: fetchPending, fill: fillPending },
  keys: { title: 'Keys', build: buildKeys, fetch: fetchKeys, fill: fillKeys },
  evidence: { title: 'Evidence', build: buildEvidence, fetch: fetchEvidence, fill: fillEvidence },
  cluster: { title: 'Cluster', build: buildCluster, fetch: fetchCluster, fill: fillCluster },
};

async function start() {
  $('#signout').addEventListener('click', (ev) => act(ev.currentTarget, async () => {
    stopEvents(); // before the session ends, so the stream does not fail loudly
    await api('/api/signout', {});
    await loadSession();
    status('You are signed out.', 'ok');
    state.keepStatus = true;
    navigate('signin');
  }));
  $('#genesis-copy').addEventListener('click', copyGenesis);
  window.addEventListener('hashchange', show);
  // Catch up with updates deferred while the officer was editing.
  document.addEventListener('focusout', () => setTimeout(resumeLive));
  document.addEventListener('toggle', () => setTimeout(resumeLive), true);
  try {
    await loadSession();
  } catch (e) {
    status(`The console cannot load its session: ${errorText(e)} Reload the page to try again.`, 'error');
  }
  show();
  if (!window.PublicKeyCredential) status('This browser cannot use security keys (WebAuthn): signing in and signing will not work here.', 'error');
}

start();
