"""Virtual BMCs: IPMI 2.0 over RMCP+ and Redfish over HTTPS, one per machine.

They reach their machine only through `target.BmcTarget`.
"""
