"""The holder: a small process beside the agent, in a container of its own, that starts the
machines' and apps' processes on the agent's request and keeps the network namespaces open,
so that all of them outlive the agent's container (issue 2-5).

A Kubernetes container's processes die with it: QEMUs started by the agent would die with
every restart of the agent's container (a kill -9, an OOM kill, a failed liveness probe),
and so would the network namespaces mounted in its mount namespace. The holder's container
stays; the agent's next container adopts what it finds (`vdc_runtime.datacenter`).

`protocol` is the wire format, `server` the holder (`vdc holder`), `client` the agent's
side, `launch` how the runtime starts processes with or without a holder.
"""
