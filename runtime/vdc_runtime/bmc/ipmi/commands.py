"""What the BMC does for each IPMI command, through its machine's `BmcTarget`.

Each handler takes the request data and returns (completion code, reply data); the
table says which privilege the session needs (IPMI appendix G). Commands that are not in
the table get "invalid command" (C1h), as on a real BMC.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vdc_runtime.bmc.ipmi import codec, inventory
from vdc_runtime.bmc.target import BmcTarget, PowerStateError, TargetError
from vdc_runtime.bmc.users import IPMI_PRIVILEGE, Users

log = logging.getLogger("vdc.bmc.ipmi")

ACCEPT_WITHIN = 0.5
"""Chassis control replies within this; an action still going on (a power on that waits
for the firmware, say) goes on after the reply, as on a real BMC, instead of making the
client time out and retransmit."""

Reply = tuple[int, bytes]
Handler = Callable[["Commands", bytes], Awaitable[Reply]]


@dataclass(frozen=True)
class Command:
    privilege: int
    handler: Handler


class Commands:
    """The command set of one BMC."""

    def __init__(self, target: BmcTarget, users: Users, active_sessions: Callable[[], int]):
        self.target = target
        self.name = target.facts.name
        self.guid = uuid.UUID(target.facts.uuid).bytes[::-1]  # LS byte first (section 20.8)
        self._accounts = [(u.name, IPMI_PRIVILEGE[u.role]) for u in users]
        self._active_sessions = active_sessions
        # Parameters a client may write and read back; they change nothing on a VM, whose
        # override lasts until the next boot with no 60 s expiry and no boot info to ack.
        self._set_in_progress = 0
        self._valid_bit_clearing = 0
        self._actions: set[asyncio.Task[object]] = set()
        self.inventory = inventory.Inventory(target)

    async def run(self, netfn: int, command: int, data: bytes, privilege: int) -> Reply:
        entry = COMMANDS.get((netfn, command))
        if entry is None:
            return codec.INVALID_COMMAND, b""
        if privilege < entry.privilege:
            return codec.INSUFFICIENT_PRIVILEGE, b""
        try:
            return await entry.handler(self, data)
        except IndexError:  # request data shorter than the command needs
            return codec.REQUEST_DATA_LENGTH_INVALID, b""
        except PowerStateError as exc:
            log.info("node %s: IPMI request refused: %s", self.name, exc)
            return codec.NOT_IN_PRESENT_STATE, b""
        except TargetError as exc:
            log.warning("node %s: IPMI request failed: %s", self.name, exc)
            return codec.UNSPECIFIED_ERROR, b""

    # -- App --------------------------------------------------------------------------------

    async def get_device_id(self, data: bytes) -> Reply:
        return codec.OK, codec.device_id()

    async def cold_reset(self, data: bytes) -> Reply:
        return codec.OK, b""  # the BMC restarts instantly and keeps its sessions

    async def get_self_test_results(self, data: bytes) -> Reply:
        return codec.OK, bytes([0x55, 0x00])  # 55h: no error

    async def get_acpi_power_state(self, data: bytes) -> Reply:
        power = await self.target.power_state()
        return codec.OK, bytes([0x00 if power == "On" else 0x05, 0x00])  # S0/G0 or S5/G2

    async def get_system_guid(self, data: bytes) -> Reply:
        return codec.OK, self.guid

    async def get_channel_info(self, data: bytes) -> Reply:
        return codec.channel_info(data, self._active_sessions())

    async def get_channel_cipher_suites(self, data: bytes) -> Reply:
        return codec.cipher_suites_page(data, codec.LAN_CHANNEL)

    async def get_user_access(self, data: bytes) -> Reply:
        if data[0] & 0x0F not in (codec.LAN_CHANNEL, codec.CURRENT_CHANNEL):
            return codec.INVALID_DATA_FIELD, b""
        return codec.user_access(data[1] & 0x3F, self._accounts)

    async def get_user_name(self, data: bytes) -> Reply:
        return codec.user_name(data[0] & 0x3F, self._accounts)

    # -- Chassis ------------------------------------------------------------------------------

    async def get_chassis_status(self, data: bytes) -> Reply:
        status = codec.chassis_status(await self.target.power_state())
        return codec.OK, status[:2] + bytes([status[2] | self.inventory.identify_state()])

    async def chassis_control(self, data: bytes) -> Reply:
        action = data[0] & 0x0F
        target = self.target
        requests: dict[int, Callable[[], Awaitable[object]]] = {
            codec.POWER_DOWN: target.power_off,
            codec.POWER_UP: target.power_on,
            codec.POWER_CYCLE: target.power_cycle,
            codec.HARD_RESET: target.reset,
            codec.PULSE_DIAG: target.nmi,
            codec.SOFT_SHUTDOWN: target.graceful_shutdown,
        }
        if action not in requests:
            return codec.INVALID_DATA_FIELD, b""
        log.info("node %s: IPMI chassis control %s", self.name, CONTROL_NAMES[action])
        task = asyncio.ensure_future(requests[action]())
        try:
            await asyncio.wait_for(asyncio.shield(task), ACCEPT_WITHIN)
        except TimeoutError:
            self._actions.add(task)
            task.add_done_callback(self._action_done)
        return codec.OK, b""

    def _action_done(self, task: asyncio.Task[object]) -> None:
        self._actions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("node %s: IPMI chassis control failed: %s", self.name, task.exception())

    async def set_system_boot_options(self, data: bytes) -> Reply:
        parameter = data[0] & 0x7F
        if parameter == codec.BOOT_PARAM_SET_IN_PROGRESS:
            self._set_in_progress = data[1] & 0x03
            return codec.OK, b""
        if parameter == codec.BOOT_PARAM_VALID_BIT_CLEARING:
            self._valid_bit_clearing = data[1] & 0x1F
            return codec.OK, b""
        if parameter in (codec.BOOT_PARAM_INFO_ACK, codec.BOOT_PARAM_INITIATOR_INFO):
            return codec.OK, b""
        if parameter != codec.BOOT_PARAM_FLAGS:
            return codec.PARAMETER_NOT_SUPPORTED, b""
        if len(data) < 6:
            return codec.REQUEST_DATA_LENGTH_INVALID, b""
        override = codec.decode_boot_flags(data[1:6])
        if override is None:
            return codec.INVALID_DATA_FIELD, b""
        await self.target.set_boot_override(override)
        return codec.OK, b""

    async def get_system_boot_options(self, data: bytes) -> Reply:
        parameter = data[0] & 0x7F
        if parameter == codec.BOOT_PARAM_SET_IN_PROGRESS:
            value = bytes([self._set_in_progress])
        elif parameter == codec.BOOT_PARAM_VALID_BIT_CLEARING:
            value = bytes([self._valid_bit_clearing])
        elif parameter == codec.BOOT_PARAM_INFO_ACK:
            value = bytes([0x00, 0x00])
        elif parameter == codec.BOOT_PARAM_INITIATOR_INFO:
            value = bytes(9)
        elif parameter == codec.BOOT_PARAM_FLAGS:
            value = codec.encode_boot_flags(self.target.boot_override())
        else:
            return codec.PARAMETER_NOT_SUPPORTED, b""
        return codec.OK, bytes([0x01, parameter]) + value


CONTROL_NAMES = ["power down", "power up", "power cycle", "hard reset", "diag (NMI)", "soft off"]

_APP, _CHASSIS = codec.NETFN_APP, codec.NETFN_CHASSIS
_USER, _OPERATOR, _ADMIN = codec.USER, codec.OPERATOR, codec.ADMINISTRATOR

COMMANDS: dict[tuple[int, int], Command] = {
    (_APP, 0x01): Command(_USER, Commands.get_device_id),
    (_APP, 0x02): Command(_ADMIN, Commands.cold_reset),
    (_APP, 0x04): Command(_USER, Commands.get_self_test_results),
    (_APP, 0x07): Command(_USER, Commands.get_acpi_power_state),
    (_APP, 0x37): Command(_USER, Commands.get_system_guid),
    (_APP, 0x42): Command(_USER, Commands.get_channel_info),
    (_APP, 0x44): Command(_OPERATOR, Commands.get_user_access),
    (_APP, 0x46): Command(_OPERATOR, Commands.get_user_name),
    (_APP, 0x54): Command(_USER, Commands.get_channel_cipher_suites),
    (_CHASSIS, 0x01): Command(_USER, Commands.get_chassis_status),
    (_CHASSIS, 0x02): Command(_OPERATOR, Commands.chassis_control),
    (_CHASSIS, 0x08): Command(_OPERATOR, Commands.set_system_boot_options),
    (_CHASSIS, 0x09): Command(_OPERATOR, Commands.get_system_boot_options),
}


def _inventory_command(name: str) -> Handler:
    async def handler(commands: Commands, data: bytes) -> Reply:
        return await getattr(commands.inventory, name)(data)  # type: ignore[no-any-return]

    return handler


COMMANDS.update(
    {key: Command(privilege, _inventory_command(name))
     for key, (privilege, name) in inventory.COMMANDS.items()}
)  # fmt: skip


__all__ = ["COMMANDS", "Commands"]
