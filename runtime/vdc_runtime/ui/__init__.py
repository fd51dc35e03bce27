"""The web view of a running data center (`/ui/` on the run's API and the agent's).

It shows what the API shows, drawn: the topology with each machine's state, BMC endpoints,
console logs and active faults; with the run's token, it also acts (power actions) and
opens a machine's serial console in the browser (xterm.js over a websocket). `auth` decides
who may act (pure); `routes` serves the page and the console; the page and its bundled
libraries are package data under `static/` (scripts/ui_assets.py fills `static/vendor/`).
"""
