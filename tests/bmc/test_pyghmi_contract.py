"""What vdc's IPMI server takes from pyghmi's private classes is still there.

bmc/ipmi/session.py and server.py subclass `ServerSession` and `Bmc` and call methods
pyghmi does not document, so pyproject.toml pins the versions this was checked with; a
new version within the pin must keep these names and parameters, or this fails before any
IPMI client does.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from pyghmi.ipmi import bmc
from pyghmi.ipmi.private import constants, serversession, session

import tests

PINNED = "pyghmi"


def _requirement() -> SpecifierSet:
    import tomllib
    from pathlib import Path

    pyproject = Path(tests.__file__).resolve().parents[1] / "pyproject.toml"
    for dep in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        if dep.startswith(PINNED):
            return SpecifierSet(dep.removeprefix(PINNED))
    raise AssertionError("pyghmi is not a dependency")


def test_pyghmi_is_pinned_and_the_installed_version_is_in_the_pin() -> None:
    spec = _requirement()
    assert any(s.operator == "<" for s in spec), f"pyghmi{spec} has no upper bound"
    assert Version(version(PINNED)) in spec


def _params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


def test_session_methods_the_server_calls() -> None:
    cls = serversession.ServerSession
    assert issubclass(cls, session.Session)
    # Decodes and checks a packet of an established session (server.py routes to it).
    assert _params(cls._handle_ipmi_packet)[:3] == ["self", "data", "sockaddr"]
    # Encode and send: RAKP messages and replies (session.py).
    assert _params(cls.send_payload)[:4] == ["self", "payload", "payload_type", "retry"]
    params = _params(cls._send_ipmi_net_payload)
    assert {"code", "data"} <= set(params)


def test_session_attributes_its_methods_read() -> None:
    # session.py sets these in __init__ instead of calling pyghmi's, which opens sockets;
    # pyghmi's methods must still read them by these names.
    source = inspect.getsource(session.Session) + inspect.getsource(serversession.ServerSession)
    names = ("servermode ipmiversion authtype rqaddr sequencenumber sessionid integrityalgo"
             " confalgo k1 k2 lastpayload pendingpayloads currhashlib currhashlen sockaddr"
             " rqlun _customkeepalives clientsessionid localsid managedsessionid")  # fmt: skip
    for name in names.split():
        assert f"self.{name}" in source, name


def test_bmc_methods_the_server_calls() -> None:
    assert _params(bmc.Bmc.sessionless_data) == ["self", "data", "sockaddr"]
    assert _params(bmc.Bmc.send_cipher_suites)[:4] == ["self", "myaddr", "mylun", "clientaddr"]
    assert session._checksum(1, 2, 3) == (0x100 - 6) & 0xFF
    assert constants.IPMI_BMC_ADDRESS == 0x20
    assert {"ipmi", "sol", "rakp2", "rakp4"} <= set(constants.payload_types)
