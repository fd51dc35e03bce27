"""Redfish for the BMCs: HTTPS, Basic auth and sessions, one machine per BMC address.

`resources` builds the JSON tree (pure), `bodies` checks request bodies (pure), `auth` and
`sessions` decide who is asking, `power` maps resets onto the machine's `BmcTarget`, and
`server` is the aiohttp side that puts them together.
"""

from vdc_runtime.bmc.redfish.server import RedfishService

__all__ = ["RedfishService"]
