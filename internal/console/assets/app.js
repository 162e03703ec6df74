// custos officer console (docs/console.md). Plain DOM, no framework, no
// inline code (the page's Content-Security-Policy allows script-src 'self'
// only). Server data is only ever set as text, never parsed as HTML.
'use strict';

const state = { session: null, overview: null, route: '', events: null, poll: null, busy: false };

// ---- small helpers -------------------------------------------------------

function $(sel, root) { return (root || document).querySelector(sel); }

// el builds an element: el('td', {class: 'x', 'data-key': k}, 'text', child…).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

function b64uToBuf(s) {
  const b = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4));
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
  return out.buffer;
}

function bufToB64u(buf) {
  const bytes = new Uint8Array(buf);
  let s = '';
  for (const x of bytes) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// when shows a time in local time, with UTC on hover.
function when(iso) {
  if (!iso) return el('span', { text: '—' });
  const d = new Date(iso);
  return el('time', { datetime: iso, title: d.toISOString() }, d.toLocaleString());
}

function status(text, kind) {
  const s = $('#status');
  s.textContent = text || '';
  s.className = 'status' + (kind ? ' ' + kind : '') + (text ? '' : ' empty');
}

class APIError extends Error {
  constructor(msg, code, httpStatus) { super(msg); this.code = code; this.httpStatus = httpStatus; }
}

async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (method === 'POST') {
    opts.headers['Content-Type'] = 'application/json';
    opts.headers['X-Custos-CSRF'] = (state.session && state.session.csrf) || '';
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  let data = {};
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new APIError(data.error || `${r.status} ${r.statusText}`, data.code || '', r.status);
  return data;
}

// busy disables a button while its action runs and reports the outcome.
async function busy(button, fn) {
  if (state.busy) return;
  state.busy = true;
  if (button) button.disabled = true;
  try {
    await fn();
  } catch (e) {
    status(e.code ? `${e.code}: ${e.message}` : String(e.message || e), 'error');
  } finally {
    state.busy = false;
    if (button) button.disabled = false;
    $('#sign-box').classList.add('hidden');
  }
}

function publicKeyAssertion(a) {
  return {
    credential_id: bufToB64u(a.rawId),
    authenticator_data: bufToB64u(a.response.authenticatorData),
    client_data_json: bufToB64u(a.response.clientDataJSON),
    signature: bufToB64u(a.response.signature),
  };
}

// myCredentialIDs are the signed-in officer's credentials (from overview).
function myCredentialIDs() {
  const me = state.overview && state.overview.officers.find((o) => o.name === state.session.officer);
  return me ? me.credentials.map((c) => c.id) : [];
}

// signStatement shows what is about to be signed, asks the security key
// for an assertion over the statement's digest and adds it on the cluster.
async function signStatement(st) {
  $('#sign-description').textContent = st.description;
  $('#sign-box').classList.remove('hidden');
  status('Touch your security key to sign…');
  const a = await navigator.credentials.get({ publicKey: {
    challenge: b64uToBuf(st.challenge), rpId: state.session.rp_id, timeout: 60000, userVerification: 'preferred',
    allowCredentials: myCredentialIDs().map((id) => ({ type: 'public-key', id: b64uToBuf(id) })),
  } });
  const res = await api('POST', '/api/proposals/sign', { statement: st.statement, assertion: publicKeyAssertion(a) });
  if (res.applied) {
    status(`Applied: ${res.applied.result} (signed by ${res.applied.signers.join(', ')}; ledger record ${res.applied.ledger_seq})`, 'ok');
  } else if (res.proposal) {
    const p = res.proposal;
    status(`Signed. ${p.signers.length} of ${p.needed} signatures — the statement waits for the other officers (proposal ${p.id}).`, 'ok');
  }
  await render();
  return res;
}

async function prepareAndSign(op) {
  const st = await api('POST', '/api/statements', op);
  return signStatement(st);
}

// ---- session and routing ------------------------------------------------

async function loadSession() {
  state.session = await api('GET', '/api/session');
  const who = $('#whoami');
  if (state.session.officer) {
    who.textContent = `Signed in as ${state.session.officer}`;
    $('#signout').classList.remove('hidden');
    state.overview = await api('GET', '/api/overview');
    $('#clusterline').textContent = `Cluster ${state.overview.cluster_id} · node ${state.session.node} · ` +
      `${state.overview.officers.length} officers, quorum ${state.overview.quorum} · genesis ${String(state.overview.genesis || '').slice(0, 16)}…`;
    startEvents();
  } else {
    who.textContent = '';
    $('#signout').classList.add('hidden');
    $('#clusterline').textContent = `Cluster ${state.session.cluster_id} · node ${state.session.node}`;
    stopEvents();
  }
}

const pages = { signin: pageSignin, register: pageRegister, pending: pagePending, keys: pageKeys, evidence: pageEvidence, cluster: pageCluster };
const signedInPages = new Set(['pending', 'keys', 'evidence', 'cluster']);

function route() {
  const r = (location.hash || '').replace(/^#\//, '');
  return pages[r] ? r : '';
}

async function render() {
  let r = route();
  if (!r) r = state.session && state.session.officer ? 'pending' : 'signin';
  if (signedInPages.has(r) && !(state.session && state.session.officer)) r = 'signin';
  state.route = r;
  for (const a of document.querySelectorAll('.nav a')) a.classList.toggle('active', a.id === `nav-${r}`);
  document.body.classList.toggle('signed-in', !!(state.session && state.session.officer));
  const main = $('#main');
  try {
    const view = await pages[r]();
    if (state.route === r) main.replaceChildren(view);
  } catch (e) {
    if (e.httpStatus === 401) { await loadSession(); location.hash = '#/signin'; return; }
    main.replaceChildren(el('p', { class: 'error' }, `Could not load this page: ${e.message}`));
  }
}

// liveRender re-renders the page for a change another officer made, unless
// the officer is editing something on it (it would be lost): then the page
// says there is news and re-renders once the editing is done.
function liveRender() {
  if (state.busy || !signedInPages.has(state.route)) return;
  const a = document.activeElement;
  const editing = $('#main details[open]') || (a && $('#main').contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName));
  if (editing) {
    state.stale = true;
    if (!$('#status').textContent) status('Another officer acted: the page updates when you finish here.');
    return;
  }
  state.stale = false;
  render();
}

function startEvents() {
  if (state.events || state.poll) return;
  try {
    state.events = new EventSource('/api/events');
    state.events.addEventListener('change', liveRender);
    state.events.onerror = () => {
      if (state.events) state.events.close();
      state.events = null;
      if (!state.poll) state.poll = setInterval(liveRender, 3000);
    };
  } catch (_) {
    state.poll = setInterval(liveRender, 3000);
  }
}

function stopEvents() {
  if (state.events) state.events.close();
  if (state.poll) clearInterval(state.poll);
  state.events = null;
  state.poll = null;
}

// ---- pages -----------------------------------------------------------------

function pageSignin() {
  const name = el('input', { id: 'signin-officer', autocomplete: 'username', placeholder: 'e.g. alice', required: true });
  const button = el('button', { id: 'signin-button', type: 'submit', class: 'primary' }, 'Sign in with security key');
  const form = el('form', { class: 'card narrow', onsubmit: (ev) => { ev.preventDefault(); busy(button, () => signIn(name.value.trim())); } },
    el('h1', {}, 'Sign in'),
    el('p', {}, 'Officers sign in with the security key the officers bound to their name.'),
    el('label', {}, 'Officer name', name), button,
    el('p', { class: 'muted' }, 'No security key bound yet? ', el('a', { id: 'nav-register', href: '#/register' }, 'Register one')));
  return form;
}

async function signIn(officer) {
  if (!officer) throw new Error('Enter your officer name.');
  const begin = await api('POST', '/api/signin/begin', { officer });
  status('Touch your security key…');
  const a = await navigator.credentials.get({ publicKey: {
    challenge: b64uToBuf(begin.challenge), rpId: begin.rp_id, timeout: 60000, userVerification: begin.user_verification,
    allowCredentials: begin.credential_ids.map((id) => ({ type: 'public-key', id: b64uToBuf(id) })),
  } });
  const res = await api('POST', '/api/signin/finish', { officer, assertion: publicKeyAssertion(a) });
  state.session.csrf = res.csrf;
  await loadSession();
  status(`Signed in as ${officer}.`, 'ok');
  location.hash = '#/pending';
  await render();
}

function pageRegister() {
  const name = el('input', { id: 'register-officer', autocomplete: 'username', placeholder: 'your officer name', required: true });
  const label = el('input', { id: 'register-label', placeholder: "e.g. alice's YubiKey" });
  const result = el('div', { id: 'register-result' });
  const button = el('button', { id: 'register-button', type: 'submit', class: 'primary' }, 'Register security key');
  return el('form', { class: 'card narrow', onsubmit: (ev) => { ev.preventDefault(); busy(button, () => register(name.value.trim(), label.value.trim(), result)); } },
    el('h1', {}, 'Register a security key'),
    el('p', {}, 'Your key is asked twice: to create the credential, then to sign the registration with it. ' +
      'It counts for you only once a quorum of the officers has signed the registration.'),
    el('label', {}, 'Officer name', name), el('label', {}, 'Label', label), button, result);
}

async function register(officer, label, result) {
  if (!officer) throw new Error('Enter your officer name.');
  const begin = await api('POST', '/api/register/begin', { officer });
  status('Touch your security key to create the credential…');
  const cred = await navigator.credentials.create({ publicKey: {
    challenge: b64uToBuf(begin.challenge), rp: { id: begin.rp_id, name: begin.rp_name },
    user: { id: b64uToBuf(begin.user_id), name: begin.user_name, displayName: begin.user_name },
    pubKeyCredParams: [{ type: 'public-key', alg: -7 }], timeout: 60000, attestation: 'none',
    authenticatorSelection: { userVerification: 'preferred' },
    excludeCredentials: begin.exclude_credentials.map((id) => ({ type: 'public-key', id: b64uToBuf(id) })),
  } });
  const spki = cred.response.getPublicKey && cred.response.getPublicKey();
  if (!spki) throw new Error('This browser does not give the credential\'s public key (getPublicKey): use a current Chromium, Firefox or Safari.');
  const st = await api('POST', '/api/register/statement', { officer, label, credential_id: bufToB64u(cred.rawId),
    public_key: bufToB64u(spki), require_user_verification: false });
  $('#sign-description').textContent = st.description;
  $('#sign-box').classList.remove('hidden');
  status('Touch your security key again to sign the registration…');
  const proof = await navigator.credentials.get({ publicKey: { challenge: b64uToBuf(st.challenge), rpId: begin.rp_id, timeout: 60000,
    userVerification: 'preferred', allowCredentials: [{ type: 'public-key', id: cred.rawId }] } });
  const res = await api('POST', '/api/register/finish', { statement: st.statement, proof: publicKeyAssertion(proof) });
  const p = res.proposal;
  result.replaceChildren(el('div', { class: 'card ok' },
    el('p', {}, 'Registration proposal ', el('code', { id: 'register-proposal-id' }, p.id),
      ` waits for ${p.needed} officer signature${p.needed === 1 ? "" : "s"}.`),
    el('p', {}, 'Officers with key files sign it with:'),
    el('pre', { class: 'mono' }, `custos officer sign-proposal --officer NAME --officer-key KEYFILE ${p.id}`),
    el('p', { class: 'muted' }, 'Signed-in officers can sign it on their Pending page. Then sign in here.')));
  status(`Registration proposal ${p.id} created.`, 'ok');
}

function reasonLabel(r) { return String(r || '').replace(/_/g, ' ').toLowerCase(); }

async function pagePending() {
  const data = await api('GET', '/api/pending');
  const me = state.session.officer;
  const rows = data.requests.map((q) => {
    const uses = el('input', { class: 'uses', type: 'number', min: 1, max: 1000, value: 1, 'aria-label': 'uses' });
    const ttl = el('input', { class: 'ttl', type: 'number', min: 60, max: 2592000, value: 3600, 'aria-label': 'lifetime in seconds' });
    const approvals = q.approvals || [];
    const approve = el('button', { class: 'approve primary', type: 'button', disabled: approvals.includes(me) }, approvals.includes(me) ? 'Approved by you' : 'Approve');
    const deny = el('button', { class: 'deny danger', type: 'button' }, 'Deny');
    approve.addEventListener('click', () => busy(approve, async () => {
      if (q.proposal) await signStatement(q.proposal);
      else await prepareAndSign({ operation: 'approve_request', request_id: q.request_id, uses: Number(uses.value), ttl_seconds: Number(ttl.value) });
    }));
    deny.addEventListener('click', () => busy(deny, () => prepareAndSign({ operation: 'deny_request', request_id: q.request_id })));
    const needed = (state.overview && state.overview.quorum) || 0;
    return el('tr', { 'data-request-id': q.request_id },
      el('td', {}, el('div', { class: 'strong' }, q.principal), el('div', { class: 'muted mono' }, q.request_id)),
      el('td', {}, el('div', { class: 'strong' }, q.key), el('div', { class: 'muted' }, `version ${q.key_version}`)),
      el('td', {}, el('span', { class: 'badge reason' }, reasonLabel(q.reason))),
      el('td', {}, el('div', {}, q.justification || '—'), q.ticket ? el('div', { class: 'muted' }, `ticket ${q.ticket}`) : null),
      el('td', { class: 'mono small' }, el('div', { title: 'encryption context digest' }, `ctx ${(q.context_digest || '—').slice(0, 16)}`),
        el('div', { title: 'wrapped data key digest' }, `data ${(q.data_digest || '—').slice(0, 16)}`)),
      el('td', {}, when(q.create_time), el('div', { class: 'muted' }, 'expires ', when(q.expire_time))),
      el('td', { class: 'approvals' }, approvals.length ? `${approvals.join(', ')} (${approvals.length} of ${needed})` : 'none yet'),
      el('td', { class: 'actions' }, el('label', { class: 'inline' }, 'uses', uses), el('label', { class: 'inline' }, 'seconds', ttl), approve, deny));
  });
  const table = el('table', { id: 'pending-requests', class: 'grid' },
    el('thead', {}, el('tr', {}, ['Principal', 'Key', 'Reason', 'Justification', 'Digests', 'Asked', 'Approved by', ''].map((h) => el('th', {}, h)))),
    el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 8, class: 'empty' }, 'No requests are waiting.'))));
  const items = data.proposals.map((p) => {
    const signed = p.signers.includes(me);
    const waiting = state.overview ? state.overview.officers.map((o) => o.name).filter((n) => !p.signers.includes(n)) : [];
    const sign = el('button', { class: 'sign primary', type: 'button', disabled: signed }, signed ? 'Signed by you' : 'Sign');
    sign.addEventListener('click', () => busy(sign, () => signStatement(p)));
    return el('li', { 'data-proposal-id': p.id, class: 'proposal' },
      el('div', { class: 'description mono' }, p.description),
      el('div', { class: 'meta' },
        el('span', { class: 'signers' }, p.signers.length ? `Signed by ${p.signers.join(', ')}` : 'Signed by nobody yet'),
        ' · ', el('span', { class: 'needed' }, `${p.signers.length} of ${p.needed} signatures`),
        waiting.length && p.signers.length < p.needed ? ` — waiting for: ${waiting.join(', ')}` : '',
        ' · proposed by ', p.proposer, ' · expires ', when(p.expire_time)),
      sign);
  });
  return el('section', {},
    el('h1', {}, 'Requests waiting for approval'),
    el('p', { class: 'muted' }, 'An approval needs the quorum; each officer signs the same statement. Denying needs one officer.'),
    table,
    el('h2', {}, 'Statements waiting for signatures'),
    el('ul', { id: 'proposals', class: 'proposals' }, items.length ? items : el('li', { class: 'empty' }, 'No statements are waiting.')));
}

async function pageKeys() {
  const data = await api('GET', '/api/keys');
  const rows = data.keys.map((k) => {
    const act = (op, label, cls) => {
      const b = el('button', { class: `${op.split('_')[0]} ${cls}`, type: 'button' }, label);
      b.addEventListener('click', () => busy(b, async () => {
        if (op === 'revoke_key' && !window.confirm(`Revoke key ${k.name}? Every use stops at once; re-enabling needs the quorum.`)) return;
        await prepareAndSign({ operation: op, key: k.name });
      }));
      return b;
    };
    return el('tr', { 'data-key': k.name },
      el('td', {}, el('div', { class: 'strong' }, k.name), el('div', { class: 'muted' }, k.description || '')),
      el('td', {}, el('span', { class: `state badge ${k.state}` }, k.state)),
      el('td', { class: 'versions' }, `primary ${k.primary_version}, minimum ${k.min_decryption_version}`,
        el('ul', { class: 'plain small' }, k.versions.map((v) => el('li', {}, `v${v.version} ${v.state} · `, when(v.create_time))))),
      el('td', { class: 'policy' }, el('ul', { class: 'plain' }, k.policy_words.map((w) => el('li', {}, w)))),
      el('td', { class: 'actions' }, act('revoke_key', 'Revoke', 'danger'), act('disable_key', 'Disable', ''),
        act('enable_key', 'Re-enable (quorum)', ''), policyEditor(k)));
  });
  return el('section', {}, el('h1', {}, 'Keys and policies'),
    el('p', { class: 'muted' }, 'Revoking or disabling needs one officer; re-enabling needs the quorum and waits on the Pending page for the others.'),
    el('table', { id: 'keys', class: 'grid' },
      el('thead', {}, el('tr', {}, ['Key', 'State', 'Versions', 'Policy', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 5, class: 'empty' }, 'No keys.')))));
}

// policyEditor proposes a new policy for a key (quorum): the current one
// as JSON to edit; the statement then waits on the Pending page.
function policyEditor(k) {
  const area = el('textarea', { class: 'policy-json mono', rows: 12, spellcheck: 'false' });
  area.value = JSON.stringify(k.policy, null, 2);
  const propose = el('button', { class: 'propose-policy primary', type: 'button' }, 'Sign and propose');
  propose.addEventListener('click', () => busy(propose, async () => {
    let policy;
    try { policy = JSON.parse(area.value); } catch (e) { throw new Error(`The policy is not JSON: ${e.message}`); }
    await prepareAndSign({ operation: 'set_policy', key: k.name, policy });
  }));
  return el('details', { class: 'policy-editor' }, el('summary', {}, 'Change policy (quorum)'), area, propose);
}

const filters = { key: '', principal: '', reason: '', outcome: '' };

function chart(hourly) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = (tag, attrs) => { const e = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v)); return e; };
  const outcomes = ['ALLOW', 'DENY', 'PENDING'];
  const hours = [...new Set(hourly.map((h) => h.hour))].sort().slice(-24);
  const totals = hours.map((h) => outcomes.map((o) => hourly.filter((x) => x.hour === h && x.outcome === o).reduce((a, x) => a + x.count, 0)));
  const max = Math.max(1, ...totals.map((t) => t.reduce((a, b) => a + b, 0)));
  const W = 760, H = 200, left = 40, bottom = 30, bw = Math.min(48, (W - left - 10) / Math.max(1, hours.length) - 6);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H + 30}`, class: 'chart', role: 'img', 'aria-label': 'decisions per hour by outcome' });
  root.append(svg('line', { x1: left, y1: H - bottom, x2: W - 5, y2: H - bottom, class: 'axis' }));
  const label = (x, y, text, cls) => { const t = svg('text', { x, y, class: cls || 'label' }); t.textContent = text; return t; };
  root.append(label(4, 14, String(max)), label(4, H - bottom, '0'));
  hours.forEach((h, i) => {
    let y = H - bottom;
    const x = left + 8 + i * (bw + 6);
    outcomes.forEach((o, j) => {
      const n = totals[i][j];
      if (!n) return;
      const hgt = ((H - bottom - 10) * n) / max;
      y -= hgt;
      const r = svg('rect', { x, y, width: bw, height: hgt, class: `bar ${o.toLowerCase()}` });
      const tip = svg('title', {}); tip.textContent = `${h}: ${n} ${o}`; r.append(tip);
      root.append(r);
    });
    root.append(label(x, H - bottom + 14, new Date(h).getHours().toString().padStart(2, '0') + ':00', 'label small'));
  });
  outcomes.forEach((o, j) => {
    root.append(svg('rect', { x: left + j * 110, y: H + 8, width: 12, height: 12, class: `bar ${o.toLowerCase()}` }));
    root.append(label(left + j * 110 + 18, H + 18, o.toLowerCase()));
  });
  return root;
}

async function pageEvidence() {
  const q = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
  const [dec, chain] = await Promise.all([api('GET', `/api/decisions?${q}`), api('GET', '/api/chain')]);
  const input = (id, key, ph) => el('input', { id, value: filters[key], placeholder: ph });
  const fk = input('filter-key', 'key', 'key'), fp = input('filter-principal', 'principal', 'principal');
  const fr = el('select', { id: 'filter-reason' }, ['', 'CUSTOMER_INITIATED', 'CUSTOMER_WORKFLOW', 'PROVIDER_SERVICE', 'PROVIDER_SUPPORT',
    'THIRD_PARTY_DATA_REQUEST', 'EMERGENCY', 'UNSPECIFIED'].map((r) => el('option', { value: r, selected: filters.reason === r }, r ? reasonLabel(r) : 'any reason')));
  const fo = el('select', { id: 'filter-outcome' }, ['', 'ALLOW', 'DENY', 'PENDING'].map((o) => el('option', { value: o, selected: filters.outcome === o }, o ? o.toLowerCase() : 'any outcome')));
  const apply = el('button', { id: 'filter-apply', type: 'button' }, 'Apply');
  apply.addEventListener('click', () => {
    Object.assign(filters, { key: fk.value.trim(), principal: fp.value.trim(), reason: fr.value, outcome: fo.value });
    render();
  });
  const rows = dec.records.map((r) => el('tr', { class: `outcome-${r.outcome.toLowerCase()}` },
    el('td', { class: 'mono' }, r.seq), el('td', {}, when(r.time)), el('td', {}, el('span', { class: `badge ${r.outcome.toLowerCase()}` }, r.outcome)),
    el('td', {}, r.operation.replace(/_/g, ' ').toLowerCase()), el('td', {}, r.principal), el('td', {}, r.key || ''),
    el('td', {}, r.operation === 'GOVERNANCE' ? '' : reasonLabel(r.reason)), el('td', { class: 'small' }, r.signers.length ? `signed by ${r.signers.join(', ')}` : '', r.signers.length ? el('br') : null, r.detail || r.matched_rule)));
  const since = el('input', { id: 'report-since', type: 'datetime-local' });
  const until = el('input', { id: 'report-until', type: 'datetime-local' });
  const report = el('pre', { id: 'report', class: 'report' });
  const link = el('a', { id: 'report-download', href: '/api/report?download=1', download: 'custos-disclosure-report.txt' }, 'Download the report');
  const show = el('button', { id: 'report-show', type: 'button', class: 'primary' }, 'Show report');
  const params = () => {
    const p = new URLSearchParams();
    if (since.value) p.set('since', new Date(since.value).toISOString().replace(/\.\d+Z$/, 'Z'));
    if (until.value) p.set('until', new Date(until.value).toISOString().replace(/\.\d+Z$/, 'Z'));
    if (filters.key) p.set('key', filters.key);
    return p;
  };
  const updateLink = () => { const p = params(); p.set('download', '1'); link.setAttribute('href', `/api/report?${p}`); };
  since.addEventListener('change', updateLink);
  until.addEventListener('change', updateLink);
  updateLink();
  show.addEventListener('click', () => busy(show, async () => { const r = await api('GET', `/api/report?${params()}`); report.textContent = r.text; }));
  const ok = chain.verified;
  const chainBox = el('div', { id: 'chain', class: `card ${ok ? 'ok' : 'bad'}` },
    el('div', { class: 'verified strong' }, ok ? 'Chain verified' : 'Chain NOT verified'),
    el('div', { class: 'small' }, `${chain.records || 0} records, through seq ${chain.verified_through || 0}, ${chain.checkpoints || 0} checkpoints`),
    el('div', { class: 'head mono small' }, `head ${chain.seq}: ${chain.head}`),
    el('div', { class: 'witness small' }, chain.witness ? ['witnessed by ', chain.witness.name, ` at seq ${chain.witness.seq}, `, when(chain.witness.time)] : 'no witness cosignature yet'),
    (chain.problems || []).map((p) => el('div', { class: 'error small' }, p)));
  return el('section', {}, el('h1', {}, 'Evidence'),
    el('div', { class: 'row' }, el('div', { class: 'card grow' }, el('h2', {}, 'Decisions per hour, by outcome'), el('div', { id: 'chart' }, chart(dec.hourly))), chainBox),
    el('div', { class: 'filters' }, fk, fp, fr, fo, apply),
    el('table', { id: 'timeline', class: 'grid' },
      el('thead', {}, el('tr', {}, ['Seq', 'Time', 'Outcome', 'Operation', 'Principal', 'Key', 'Reason', 'Detail'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 8, class: 'empty' }, 'No decisions match.')))),
    el('h2', {}, 'Disclosure report'),
    el('div', { class: 'filters' }, el('label', { class: 'inline' }, 'from', since), el('label', { class: 'inline' }, 'until', until), show, link),
    report);
}

async function pageCluster() {
  const c = await api('GET', '/api/cluster');
  const yes = (b) => (b ? 'yes' : 'no');
  return el('section', {}, el('h1', {}, 'Cluster'),
    el('p', { class: 'muted' }, `Leader ${c.leader || 'unknown'} · this node ${c.node} · state machine version ${c.state_machine_version} · ledger at ${c.ledger_seq}`),
    el('table', { id: 'nodes', class: 'grid' },
      el('thead', {}, el('tr', {}, ['Node', 'Raft address', 'Suffrage', 'Leader', 'Custodian', 'HSM (this node)'].map((h) => el('th', {}, h)))),
      el('tbody', {}, c.nodes.map((n) => el('tr', { 'data-node': n.id },
        el('td', { class: 'strong' }, n.id), el('td', { class: 'mono' }, n.address), el('td', {}, n.suffrage.toLowerCase()),
        el('td', { class: 'leader' }, yes(n.leader)), el('td', { class: 'admitted' }, yes(n.admitted)), el('td', { class: 'hsm' }, n.hsm || '—'))))),
    el('h2', {}, 'Admissions'),
    el('table', { id: 'admissions', class: 'grid' },
      el('thead', {}, el('tr', {}, ['Node', 'State', 'Transport key', 'Identity key', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, c.admissions.length ? c.admissions.map((a) => el('tr', { 'data-admission': a.node },
        el('td', {}, a.node), el('td', {}, a.state.toLowerCase()), el('td', { class: 'mono small' }, a.transport_key_fingerprint || '—'),
        el('td', { class: 'mono small' }, a.identity_key_fingerprint || '—'), el('td', {}, a.state === 'OFFERED' ? admitForm(a) : ''))) :
        el('tr', {}, el('td', { colspan: 5, class: 'empty' }, 'No admissions.')))),
    el('p', { class: 'muted' }, 'Admitting a node is an officer statement (admit_node, quorum): custos officer admit, or a proposal signed here.'));
}

// admitForm approves a node's admission (admit_node, quorum): the officer
// types the fingerprints checked with the node's operator, out of band.
function admitForm(a) {
  const tk = el('input', { class: 'transport-key mono', placeholder: 'transport key fingerprint (64 hex)' });
  const ik = el('input', { class: 'identity-key mono', placeholder: 'identity key fingerprint (32 hex)' });
  const hash = el('select', { class: 'oaep' }, el('option', { value: 'sha256' }, 'RSA-OAEP SHA-256'), el('option', { value: 'sha1' }, 'SHA-1 (development only)'));
  const go = el('button', { class: 'admit primary', type: 'button' }, 'Sign admission');
  go.addEventListener('click', () => busy(go, () => prepareAndSign({ operation: 'admit_node', node: a.node,
    transport_key_fingerprint: tk.value, identity_key_fingerprint: ik.value, hash: hash.value })));
  return el('details', {}, el('summary', {}, 'Approve (quorum)'),
    el('p', { class: 'small muted' }, 'Type the fingerprints you checked with the node\'s operator.'), tk, ik, hash, go);
}

// ---- start -----------------------------------------------------------------

document.addEventListener('DOMContentLoaded', async () => {
  $('#signout').addEventListener('click', () => busy($('#signout'), async () => {
    await api('POST', '/api/signout', {});
    await loadSession();
    location.hash = '#/signin';
    status('Signed out.', 'ok');
  }));
  window.addEventListener('hashchange', () => { status(''); render(); });
  // Catch up on news deferred while editing once the focus leaves the page's fields.
  document.addEventListener('focusout', () => setTimeout(() => { if (state.stale) liveRender(); }, 0));
  if (!window.PublicKeyCredential) status('This browser has no WebAuthn: security keys cannot be used here.', 'error');
  try {
    await loadSession();
  } catch (e) {
    status(`The console cannot reach its node: ${e.message}`, 'error');
    return;
  }
  await render();
});
