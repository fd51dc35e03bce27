"""The agent: runs a VirtualDataCenter's data center inside its pod and reports its status.

`vdc agent` is the runtime image's entrypoint in a VDC pod. It reads its VDC from the API
server, builds the data center with the standalone runtime, serves the same REST API on
the pod's loopback (for runner containers and `kubectl vdc`), and writes what it observes
into the VDC's status, with Events for transitions and Prometheus metrics on its port.
"""
