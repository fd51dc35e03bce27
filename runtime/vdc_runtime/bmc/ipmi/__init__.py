"""IPMI 2.0 over LAN (RMCP+) for the BMCs, built on pyghmi's BMC server classes."""

from vdc_runtime.bmc.ipmi.server import IpmiService

__all__ = ["IpmiService"]
