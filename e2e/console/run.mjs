// End-to-end test of the officer console (docs/console.md), run by
// TestConsoleInBrowser (internal/console/browser_test.go) against a
// three-node `custosd dev --nodes 3` cluster it started. Debian's Chromium,
// headless, driven by playwright-core; each officer's browser has a
// virtual authenticator (Chrome DevTools Protocol, WebAuthn domain) that
// stands in for a security key. Every step checks what the console's API
// answered, not only what the page shows.
import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const env = process.env;
for (const v of ['CONSOLE_NODE1', 'CONSOLE_NODE2', 'CUSTOS_BIN', 'WORK_DIR', 'DEV_DIR', 'SCREENSHOT_DIR']) {
  if (!env[v]) throw new Error(`${v} is not set: run this through TestConsoleInBrowser (make test-console)`);
}
const work = env.WORK_DIR;
const shots = env.SCREENSHOT_DIR;
fs.mkdirSync(shots, { recursive: true });

function step(what) { console.log(`== ${what}`); }
function check(cond, what) { if (!cond) throw new Error(`check failed: ${what}`); }

// custos runs the CLI with the dev cluster's client environment.
function custos(...args) {
  try {
    return execFileSync(env.CUSTOS_BIN, args, { cwd: work, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`custos ${args.join(' ')}: ${e.status}\n${e.stdout}\n${e.stderr}`);
  }
}

// waitingDecrypt starts `custos decrypt --wait` and returns a promise of
// its exit code and output.
function waitingDecrypt(reason, text, out) {
  const p = spawn(env.CUSTOS_BIN, ['decrypt', '--justification', reason, '--text', text, '--ticket', 'LEGAL-7',
    '--wait', '--wait-timeout', '4m', 'secret.cst', out], { cwd: work, env });
  let output = '';
  p.stdout.on('data', (d) => { output += d; });
  p.stderr.on('data', (d) => { output += d; });
  return new Promise((resolve) => p.on('exit', (code) => resolve({ code, output })));
}

// The browser flags this machine needs (no sandbox as root, no network
// beyond localhost) and trust in the dev CA (see launch()).
const chromeArgs = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

async function launch() {
  return chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: chromeArgs, headless: true });
}

// officerPage opens a browser context for one officer, with its own
// virtual authenticator.
async function officerPage(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${name} console] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[${name} page error] ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'usb', hasResidentKey: true, hasUserVerification: true,
      isUserVerified: true, automaticPresenceSimulation: true },
  });
  return { name, context, page, cdp, authenticatorId };
}

// api waits for the console's answer to a request the page makes.
async function api(page, suffix, action) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === suffix && r.request().method() === 'POST', { timeout: 60000 }),
    action(),
  ]);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok()) throw new Error(`${suffix}: ${resp.status()} ${JSON.stringify(body)}`);
  return body;
}

async function shot(page, name) {
  await page.waitForTimeout(300); // let the last render settle for the picture
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: false });
}

async function register(o, base) {
  await o.page.goto(`${base}#/register`);
  await o.page.fill('#register-officer', o.name);
  // The enrolment code, signed by the officer's own key (custos officer enrol).
  const code = custos('officer', 'enrol', '--officer', o.name, '--officer-key', `${o.name}.pem`).trim();
  await o.page.fill('#register-enrolment', code);
  await o.page.fill('#register-label', `${o.name}'s security key`);
  const at = (p) => (r) => new URL(r.url()).pathname === p;
  const begun = o.page.waitForResponse(at('/api/register/begin')).then((r) => r.json());
  const statement = o.page.waitForRequest(at('/api/register/statement'));
  const res = await api(o.page, '/api/register/finish', () => o.page.click('#register-button'));
  check(res.proposal && res.proposal.id, `registration proposal for ${o.name}: ${JSON.stringify(res)}`);
  check((await statement).postDataJSON().challenge === (await begun).challenge, 'register/statement carries the challenge register/begin gave');
  await o.page.waitForSelector('#register-proposal-id');
  check((await o.page.textContent('#register-proposal-id')).trim() === res.proposal.id, 'the page shows the proposal id');
  return res.proposal.id;
}

async function signIn(o, base) {
  await o.page.goto(`${base}#/signin`);
  await o.page.fill('#signin-officer', o.name);
  await api(o.page, '/api/signin/finish', () => o.page.click('#signin-button'));
  await o.page.waitForFunction((n) => (document.querySelector('#whoami')?.textContent || '').includes(n), o.name);
}

async function main() {
  step('the client: a key and an encrypted file');
  custos('key', 'create', 'records');
  fs.writeFileSync(path.join(work, 'plain.txt'), 'residents register, ward 3\n');
  custos('encrypt', '--key', 'records', 'plain.txt', 'secret.cst');

  step('officers: officer-1 (the dev officer) adds alice and bob, quorum 2 of 3');
  custos('officer', 'keygen', '--name', 'alice', '--out', 'alice.pem');
  custos('officer', 'keygen', '--name', 'bob', '--out', 'bob.pem');
  fs.writeFileSync(path.join(work, 'officers.json'), JSON.stringify({
    officers: [
      { name: 'officer-1', public_key_file: path.join(env.DEV_DIR, 'officers', 'officer-1.pub.pem') },
      { name: 'alice', public_key_file: 'alice.pub.pem' },
      { name: 'bob', public_key_file: 'bob.pub.pem' },
    ],
    quorum: 2,
  }));
  custos('officer', 'propose', 'officers', '--file', 'officers.json', '--out', 'officers-statement.json');
  custos('officer', 'sign', 'officers-statement.json');
  custos('officer', 'submit', 'officers-statement.json');

  const browser = await launch();
  try {
    const alice = await officerPage(browser, 'alice');
    const bob = await officerPage(browser, 'bob');
    const node1 = env.CONSOLE_NODE1, node2 = env.CONSOLE_NODE2;

    step('alice registers her security key on node1; alice and officer-1 sign with their PEM keys');
    const pa = await register(alice, node1);
    await shot(alice.page, 'register');
    custos('officer', 'sign-proposal', '--officer', 'alice', '--officer-key', 'alice.pem', pa);
    check(custos('officer', 'sign-proposal', pa).includes('applied'), 'two signatures bind alice\'s key');

    step('bob registers his on node2; bob and officer-1 sign');
    const pb = await register(bob, node2);
    custos('officer', 'sign-proposal', '--officer', 'bob', '--officer-key', 'bob.pem', pb);
    check(custos('officer', 'sign-proposal', pb).includes('applied'), 'two signatures bind bob\'s key');

    step('both sign in with their keys');
    await alice.page.goto(`${node1}#/signin`);
    await alice.page.fill('#signin-officer', 'alice');
    await shot(alice.page, 'signin');
    await signIn(alice, node1);
    await signIn(bob, node2);

    step('a client asks to decrypt for a third party and waits');
    const waiting = waitingDecrypt('THIRD_PARTY_DATA_REQUEST', 'court order 2026-117', 'released.txt');
    await alice.page.goto(`${node1}#/pending`);
    const row = alice.page.locator('#pending-requests [data-request-id]').first();
    await row.waitFor({ timeout: 60000 });
    const requestID = await row.getAttribute('data-request-id');
    check(requestID, 'a pending request is listed');
    check((await row.textContent()).includes('court order 2026-117'), 'the justification is shown');

    // Bob's page is open before alice acts: it must update by itself.
    await bob.page.goto(`${node2}#/pending`);
    await bob.page.locator(`#pending-requests [data-request-id="${requestID}"]`).waitFor({ timeout: 60000 });

    step('alice approves (1 of 2)');
    await row.locator('.uses').fill('1');
    const first = await api(alice.page, '/api/proposals/sign', () => row.locator('.approve').click());
    check(first.proposal && !first.applied && first.proposal.signers.length === 1, `one approval: ${JSON.stringify(first)}`);
    await alice.page.waitForSelector(`#proposals [data-proposal-id="${first.proposal.id}"]`);
    await shot(alice.page, 'pending');

    step('bob\'s open page on node2 shows alice\'s signature (live update); he signs (2 of 2)');
    const item = bob.page.locator(`#proposals [data-proposal-id="${first.proposal.id}"]`);
    await item.waitFor({ timeout: 60000 });
    const second = await api(bob.page, '/api/proposals/sign', () => item.locator('.sign').click());
    check(second.applied && second.applied.grant_id === `g-${requestID}`, `approved into a grant: ${JSON.stringify(second)}`);
    await shot(bob.page, 'approved');
    const released = await waiting;
    check(released.code === 0, `the client's --wait completed: ${released.output}`);
    check(fs.readFileSync(path.join(work, 'released.txt'), 'utf8') === 'residents register, ward 3\n', 'the client got the plaintext');

    step('another request; bob denies it');
    const waiting2 = waitingDecrypt('THIRD_PARTY_DATA_REQUEST', 'second request', 'denied.txt');
    const row2 = bob.page.locator(`#pending-requests [data-request-id]:not([data-request-id="${requestID}"])`).first();
    await row2.waitFor({ timeout: 60000 });
    const denied = await api(bob.page, '/api/proposals/sign', () => row2.locator('.deny').click());
    check(denied.applied && /denied/.test(denied.applied.result), `denied: ${JSON.stringify(denied)}`);
    const refused = await waiting2;
    check(refused.code !== 0 && /denied/i.test(refused.output), `the client's wait ends denied: ${refused.output}`);
    check(!fs.existsSync(path.join(work, 'denied.txt')), 'no output file for a denied request');

    step('alice starts to disable the key and cancels; she revokes it (confirmed); the next decrypt is denied');
    await alice.page.goto(`${node1}#/keys`);
    const keyRow = alice.page.locator('#keys [data-key="records"]');
    await keyRow.waitFor();
    // Revoke and disable take two clicks: the button asks to be confirmed.
    await keyRow.locator('.disable').click();
    await keyRow.locator('.disable', { hasText: 'Confirm disable of records' }).waitFor({ timeout: 5000 });
    await keyRow.locator('.cancel').click();
    await keyRow.locator('.disable', { hasText: /^Disable$/ }).waitFor({ timeout: 5000 });
    check(await keyRow.locator('.cancel').count() === 0, 'Cancel puts the Disable button back');
    check(/enabled/i.test(await keyRow.locator('.state').textContent()), 'a cancelled disable changes nothing');
    await keyRow.locator('.revoke').click();
    await keyRow.locator('.revoke', { hasText: 'Confirm revoke of records' }).waitFor({ timeout: 5000 });
    const revoked = await api(alice.page, '/api/proposals/sign', () => keyRow.locator('.revoke').click());
    check(revoked.applied && /revoked/.test(revoked.applied.result), `revoked: ${JSON.stringify(revoked)}`);
    await alice.page.waitForFunction(() => /revoked/i.test(document.querySelector('#keys [data-key="records"] .state')?.textContent || ''));
    await shot(alice.page, 'keys');
    let after;
    try {
      custos('decrypt', '--justification', 'CUSTOMER_INITIATED', 'secret.cst', 'after.txt');
      after = 'released';
    } catch (e) {
      after = e.message;
    }
    check(after !== 'released' && /revoked|PermissionDenied|FailedPrecondition/i.test(after), `decrypt after revocation: ${after}`);

    step('alice proposes a policy change (quorum); bob sees who must still sign and signs');
    await alice.page.goto(`${node1}#/keys`);
    const editor = alice.page.locator('#keys [data-key="records"] .policy-editor');
    await editor.locator('summary').click();
    const policy = JSON.parse(await editor.locator('textarea').inputValue());
    policy.notifyAll = true;
    await editor.locator('textarea').fill(JSON.stringify(policy, null, 2));
    const proposed = await api(alice.page, '/api/proposals/sign', () => editor.locator('.propose-policy').click());
    check(proposed.proposal && proposed.proposal.needed === 2 && !proposed.applied, `policy proposal: ${JSON.stringify(proposed)}`);
    await bob.page.goto(`${node2}#/pending`);
    const pitem = bob.page.locator(`#proposals [data-proposal-id="${proposed.proposal.id}"]`);
    await pitem.waitFor({ timeout: 60000 });
    check(/waiting for: .*bob/.test(await pitem.textContent()), 'the proposal says bob must still sign');
    const policySet = await api(bob.page, '/api/proposals/sign', () => pitem.locator('.sign').click());
    check(policySet.applied && /policy set/.test(policySet.applied.result), `policy applied: ${JSON.stringify(policySet)}`);
    await alice.page.goto(`${node1}#/keys`);
    await alice.page.waitForFunction(() => /notified of every decision/.test(document.querySelector('#keys [data-key="records"] .policy')?.textContent || ''));

    step('evidence: chart, timeline, report, chain');
    await alice.page.goto(`${node1}#/evidence`);
    await alice.page.waitForSelector('#chart svg rect', { timeout: 30000 });
    await alice.page.waitForSelector('#timeline tr');
    await alice.page.waitForFunction(() => /verified/i.test(document.querySelector('#chain .verified')?.textContent || ''), null, { timeout: 30000 });
    check(!/not/i.test(await alice.page.textContent('#chain .verified')), 'the chain verifies');
    await shot(alice.page, 'evidence');
    check(await alice.page.getAttribute('#chart-by-outcome', 'aria-pressed') === 'true', 'the chart starts by outcome');
    await alice.page.click('#chart-by-reason');
    check(await alice.page.getAttribute('#chart-by-reason', 'aria-pressed') === 'true' &&
      await alice.page.getAttribute('#chart-by-outcome', 'aria-pressed') === 'false', 'the toggle says the chart is by reason');
    check(/Third-party data request/.test(await alice.page.textContent('#chart svg')), 'by reason, the legend names third-party requests');
    check(await alice.page.locator('#chart .bar .seg-third_party_data_request').count() > 0, 'by reason, a bar shows the third-party requests');
    await alice.page.click('#chart-by-outcome');
    check(await alice.page.locator('#chart .bar .seg-allow').count() > 0, 'by outcome again');
    await alice.page.click('#report-show');
    await alice.page.waitForFunction(() => (document.querySelector('#report')?.textContent || '').length > 50, null, { timeout: 30000 });
    check((await alice.page.textContent('#report')).includes('THIRD_PARTY'), 'the report names the third-party request');
    const href = await alice.page.getAttribute('#report-download', 'href');
    check(href && href.includes('/api/report') && href.includes('download'), `download link: ${href}`);
    const download = await alice.context.request.get(new URL(href, node1).toString());
    check(download.ok() && /attachment/.test(download.headers()['content-disposition'] || ''), 'the report downloads as a file');
    // The report's heading at the top of the picture, the report below it.
    await alice.page.locator('h2', { hasText: 'Disclosure report' }).evaluate((h) => h.scrollIntoView({ block: 'start' }));
    await shot(alice.page, 'report');

    step('cluster');
    await alice.page.goto(`${node1}#/cluster`);
    await alice.page.waitForFunction(() => document.querySelectorAll('#nodes [data-node]').length === 3, null, { timeout: 30000 });
    const [session, overview] = await alice.page.evaluate(() => Promise.all(['/api/session', '/api/overview'].map((u) => fetch(u).then((r) => r.json()))));
    check(session.genesis && await alice.page.isVisible('#genesis') && (await alice.page.textContent('#genesis')) === session.genesis,
      'the status bar shows the genesis fingerprint');
    const cred = overview.officers.find((o) => o.name === 'alice').credentials[0];
    if (cred.public_key_sha256) {
      const title = await alice.page.getAttribute(`#officers [data-credential="${cred.id}"] .public-key`, 'title');
      check(title && title.includes(cred.public_key_sha256), 'the officers table shows the security key\'s public key fingerprint');
    }
    await shot(alice.page, 'cluster');
  } finally {
    await browser.close();
  }

  step('the ledger verifies offline');
  fs.writeFileSync(path.join(work, 'ledger.pem'), custos('audit', 'pubkey'));
  custos('audit', 'export', 'ledger.export');
  const verified = custos('audit', 'verify', '--pubkey', 'ledger.pem', 'ledger.export');
  console.log(verified.trim());
  console.log('PASS');
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
