// A headless Chromium driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: no port, no WebSocket, no npm package), for
// cli/tests/dashboard.rs. Commands arrive as JSON lines on stdin, answers
// leave as JSON lines on stdout:
//   {"id":1,"cmd":"goto","url":"http://…"}       -> {"id":1,"ok":true}
//   {"id":2,"cmd":"eval","expr":"document.title"} -> {"id":2,"ok":true,"value":…}
//   {"id":3,"cmd":"screenshot","path":"/tmp/x.png"}
//   {"id":4,"cmd":"requests"}  -> every request the page made: [{method,url,type}]
//   {"id":5,"cmd":"quit"}
// Usage: node cdp.js PROFILE_DIR   (CHROMIUM names the browser binary)
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const readline = require('readline');

const profile = process.argv[2];
if (!profile) { process.stderr.write('usage: node cdp.js PROFILE_DIR\n'); process.exit(2); }
fs.mkdirSync(profile, { recursive: true });
const log = fs.openSync(path.join(profile, 'chromium.log'), 'a');
const browser = spawn(process.env.CHROMIUM || 'chromium', [
  '--headless=new', '--remote-debugging-pipe', '--no-sandbox', '--disable-gpu',
  '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
  '--disable-extensions', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-default-apps', '--mute-audio', '--window-size=1280,900',
  '--user-data-dir=' + profile, 'about:blank',
], { stdio: ['ignore', log, log, 'pipe', 'pipe'] });

let alive = true;
browser.on('exit', (code, sig) => {
  alive = false;
  reply({ id: 0, ok: false, error: 'chromium exited (' + (code ?? sig) + '); see ' + path.join(profile, 'chromium.log') });
  process.exit(1);
});
function shutdown() { if (alive) browser.kill('SIGKILL'); process.exit(0); }
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

const toBrowser = browser.stdio[3];
const fromBrowser = browser.stdio[4];
let nextId = 1;
const pending = new Map();
const waiters = [];
const requests = [];

function cdp(method, params, sessionId) {
  const id = nextId++;
  const msg = { id, method, params: params || {} };
  if (sessionId) msg.sessionId = sessionId;
  toBrowser.write(JSON.stringify(msg) + '\0');
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject, method }));
}

// Resolves on the next event named `method` (of the page's session).
function next(method) {
  return new Promise((resolve) => waiters.push({ method, resolve }));
}

let buf = Buffer.alloc(0);
fromBrowser.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  let end;
  while ((end = buf.indexOf(0)) >= 0) {
    const msg = JSON.parse(buf.subarray(0, end).toString('utf8'));
    buf = buf.subarray(end + 1);
    if (msg.id && pending.has(msg.id)) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p.reject(new Error(p.method + ': ' + msg.error.message));
      else p.resolve(msg.result);
    } else if (msg.method) {
      if (msg.method === 'Network.requestWillBeSent') {
        const r = msg.params.request;
        requests.push({ method: r.method, url: r.url, type: msg.params.type || '' });
      }
      for (let i = 0; i < waiters.length; i++) {
        if (waiters[i].method === msg.method) { waiters.splice(i, 1)[0].resolve(msg.params); i--; }
      }
    }
  }
});

function reply(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

function bounded(p, ms, what) {
  return Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(what + ': no answer in ' + ms + ' ms')), ms))]);
}

let session = null;
async function setup() {
  const { targetId } = await cdp('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await cdp('Target.attachToTarget', { targetId, flatten: true });
  session = sessionId;
  await cdp('Page.enable', {}, session);
  await cdp('Runtime.enable', {}, session);
  await cdp('Network.enable', {}, session);
  await cdp('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false }, session);
}

async function handle(c) {
  switch (c.cmd) {
    case 'goto': {
      const loaded = next('Page.loadEventFired');
      const r = await cdp('Page.navigate', { url: c.url }, session);
      if (r.errorText) throw new Error('navigate: ' + r.errorText);
      await loaded;
      return {};
    }
    case 'eval': {
      const r = await cdp('Runtime.evaluate', { expression: c.expr, returnByValue: true, awaitPromise: true }, session);
      if (r.exceptionDetails) throw new Error('eval: ' + (r.exceptionDetails.exception ? r.exceptionDetails.exception.description : r.exceptionDetails.text));
      return { value: r.result.value === undefined ? null : r.result.value };
    }
    case 'screenshot': {
      const r = await cdp('Page.captureScreenshot', { format: 'png' }, session);
      fs.writeFileSync(c.path, Buffer.from(r.data, 'base64'));
      return {};
    }
    case 'requests':
      return { value: requests };
    case 'quit':
      setTimeout(shutdown, 50);
      return {};
    default:
      throw new Error('unknown command ' + c.cmd);
  }
}

const ready = bounded(setup(), 30000, 'chromium start');
const rl = readline.createInterface({ input: process.stdin });
// One command at a time, in order; end once the last has been answered.
let chain = Promise.resolve();
async function run(line) {
  let c;
  try { c = JSON.parse(line); } catch (e) { reply({ id: 0, ok: false, error: 'bad command: ' + line }); return; }
  try {
    await ready;
    const r = await bounded(handle(c), 20000, c.cmd);
    reply(Object.assign({ id: c.id, ok: true }, r));
  } catch (e) {
    reply({ id: c.id, ok: false, error: String(e && e.message ? e.message : e) });
  }
}
rl.on('line', (line) => { chain = chain.then(() => run(line)); });
rl.on('close', () => { chain.then(shutdown); });
