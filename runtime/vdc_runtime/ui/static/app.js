// The web view: polls the run's API and draws it; with the run's token (a cookie the
// server set from /ui/?token=...), offers power actions and the serial console.
"use strict";

const POLL_MS = 2000;
const UI_HEADER = { "X-Vdc-UI": "1" };
let session = { authorized: false, actions: [], console: false, missing: null };
let lastSvg = "";
let term = null;
let socket = null;
let logTimer = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function showError(message) {
  $("error").textContent = message || "";
}

async function getJson(path) {
  const resp = await fetch(path, { cache: "no-store", headers: UI_HEADER });
  return { status: resp.status, body: await resp.json() };
}

async function refreshTopology() {
  const resp = await fetch("/ui/topology.svg", { cache: "no-store" });
  const text = await resp.text();
  if (text !== lastSvg) {
    lastSvg = text;
    // Drawn by the server's own SVG renderer, which escapes every name in it.
    $("topology").innerHTML = text.replace(/^<\?xml[^>]*>\s*/, "");
  }
}

function bmcCell(bmc) {
  if (!bmc) return el("td", { class: "bmc" }, "none");
  const lines = [`${bmc.address} (${bmc.state})`];
  if (bmc.ipmi) lines.push(`IPMI ${bmc.ipmi}`);
  if (bmc.redfish) lines.push(`Redfish ${bmc.redfish}`);
  if (bmc.published) {
    lines.push(`on the host: IPMI :${bmc.published.ipmi_port}, Redfish :${bmc.published.redfish_port}`);
  }
  if (bmc.error) lines.push(`error: ${bmc.error}`);
  const cell = el("td", { class: "bmc" });
  lines.forEach((line, i) => { if (i) cell.append(el("br")); cell.append(line); });
  return cell;
}

function machineRow(node) {
  const buttons = el("td");
  buttons.append(el("button", { type: "button", "data-log": node.name, onclick: () => openLog(node.name) }, "log"));
  if (session.authorized) {
    if (session.console) {
      buttons.append(el("button", { type: "button", "data-console": node.name, onclick: () => openConsole(node.name) }, "console"));
    }
    for (const action of session.actions) {
      buttons.append(el("button", {
        type: "button", "data-node": node.name, "data-action": action,
        onclick: () => confirmAction(node.name, action),
      }, action));
    }
  }
  const state = node.ready ? "ready" : node.state;
  return el("tr", { "data-name": node.name },
    el("td", {}, node.name),
    el("td", { class: `state-${state}` }, state),
    el("td", {}, node.power_status),
    el("td", { "data-boots": node.name }, node.boots),
    bmcCell(node.bmc),
    buttons);
}

let lastMachines = "";

async function refreshMachines() {
  const { body } = await getJson("/nodes");
  // Redrawn only when what the table shows changed, so that a button does not move
  // under the pointer at every poll.
  const shown = JSON.stringify(body.map((n) => [n.name, n.ready, n.state, n.power_status, n.boots, n.bmc]));
  if (shown !== lastMachines) {
    lastMachines = shown;
    $("machines").tBodies[0].replaceChildren(...body.map(machineRow));
  }
}

async function refreshFaults() {
  const { body } = await getJson("/faults");
  const items = body.length ? body.map((f) => el("li", { "data-fault": f.id }, `#${f.id} ${f.kind} ${f.target ?? ""}: ${f.summary}`))
    : [el("li", {}, "none")];
  $("faults").replaceChildren(...items);
}

async function refreshHealth() {
  const { body } = await getJson("/health");
  $("health").textContent = `phase: ${body.phase}, vdc ${body.version}`;
}

async function refresh() {
  try {
    await Promise.all([refreshHealth(), refreshTopology(), refreshMachines(), refreshFaults()]);
    showError("");
  } catch (err) {
    showError(`cannot reach the data center's API: ${err}`);
  }
}

function confirmAction(name, action) {
  const dialog = $("confirm");
  $("confirm-text").textContent = `${action} ${name}?`;
  dialog.returnValue = "";
  dialog.onclose = () => { if (dialog.returnValue === "ok") act(name, action); };
  dialog.showModal();
}

async function act(name, action) {
  const resp = await fetch(`/ui/nodes/${encodeURIComponent(name)}/${encodeURIComponent(action)}`,
    { method: "POST", headers: UI_HEADER });
  if (!resp.ok) {
    const body = await resp.json().catch(() => ({}));
    showError(`${action} ${name}: ${resp.status} ${body.error ?? ""}`);
  } else {
    showError("");
  }
  refresh();
}

function openConsole(name) {
  closeConsole();
  $("console-node").textContent = name;
  $("console-section").hidden = false;
  term = new Terminal({ convertEol: false, scrollback: 5000 });
  term.open($("terminal"));
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/ui/nodes/${encodeURIComponent(name)}/console`);
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  socket.onopen = () => { $("console-status").textContent = "connected"; term.focus(); };
  socket.onmessage = (ev) => term.write(new Uint8Array(ev.data));
  socket.onclose = (ev) => { $("console-status").textContent = `disconnected ${ev.reason || ""}`; };
  term.onData((data) => { if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data)); });
}

function closeConsole() {
  if (socket) socket.close();
  if (term) term.dispose();
  socket = term = null;
  $("console-section").hidden = true;
}

function openLog(name) {
  closeLog();
  $("log-node").textContent = name;
  $("log-section").hidden = false;
  const decoder = new TextDecoder();
  let offset = 0;
  const pre = $("log");
  pre.textContent = "";
  const poll = async () => {
    const resp = await fetch(`/nodes/${encodeURIComponent(name)}/console-log?offset=${offset}`, { cache: "no-store" });
    if (resp.ok) {
      const chunk = new Uint8Array(await resp.arrayBuffer());
      offset = Number(resp.headers.get("X-Vdc-Next-Offset") ?? offset + chunk.length);
      if (chunk.length) {
        // Terminal colours and cursor moves are noise in a plain log.
        pre.textContent += decoder.decode(chunk, { stream: true }).replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
        pre.scrollTop = pre.scrollHeight;
      }
    }
    logTimer = setTimeout(poll, POLL_MS);
  };
  poll();
}

function closeLog() {
  clearTimeout(logTimer);
  $("log-section").hidden = true;
}

async function start() {
  $("console-close").onclick = closeConsole;
  $("log-close").onclick = closeLog;
  try {
    session = (await getJson("/ui/session")).body;
  } catch (err) {
    showError(`cannot reach the data center's API: ${err}`);
  }
  // Said on the page, not only left out: whoever installed vdc learns what to add.
  if (session.missing) {
    $("notice").textContent = session.missing;
    $("notice").hidden = false;
  }
  session.console = session.console && typeof Terminal !== "undefined";
  $("access").textContent = session.authorized
    ? (session.console ? "actions and consoles enabled" : "actions enabled (no console)")
    : "read-only: open the URL the run printed (with its token) to act";
  await refresh();
  setInterval(refresh, POLL_MS);
}

start();
