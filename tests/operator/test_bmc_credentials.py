"""No well-known BMC account on Kubernetes: a VDC whose spec names no BMC users gets a
generated account in a Secret it owns, mounted for its agent and given to its runners."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.operator.test_builders import vdc
from vdc_operator import builders
from vdc_runtime.agent.files import with_generated_admin
from vdc_runtime.agent.status import RunObservation, agent_status
from vdc_runtime.phases import RunPhase
from vdc_runtime.resource import spec as cr


def without_users() -> dict:  # type: ignore[type-arg]
    body = vdc()
    body["spec"]["bmc"] = {"publish": {"ipmiPort": 6230, "redfishPort": 8443}}
    return body


def test_the_generated_account_is_a_secret_the_vdc_owns() -> None:
    body = without_users()
    assert builders.generates_bmc_account(cr.parse(body["spec"]))
    secret = builders.build_bmc_secret(body, "s3cret-Pw")
    assert secret["metadata"]["name"] == "vdc-quickstart-bmc"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"username": "admin", "password": "s3cret-Pw"}


def test_the_agent_reads_it_and_the_runners_get_it() -> None:
    body = without_users()
    body["spec"]["runners"] = {"url": "https://github.com/o/r",
                               "credentials": {"secretName": "gh"}}  # fmt: skip
    (pod,) = builders.build_pods(body, cr.parse(body["spec"]), builders.Settings())
    agent, holder, runner = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["VDC_BMC_PASSWORD_FILE"] == "/etc/vdc/bmc/password"
    assert env["VDC_BMC_SECRET"] == "vdc-quickstart-bmc"
    assert {"name": "bmc-credentials", "mountPath": "/etc/vdc/bmc", "readOnly": True} in (
        agent["volumeMounts"]
    )
    assert all(m["name"] != "bmc-credentials" for m in holder["volumeMounts"])
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in runner["env"] if "valueFrom" in e}
    assert refs["VDC_BMC_USER"] == {"name": "vdc-quickstart-bmc", "key": "username"}
    assert refs["VDC_BMC_PASSWORD"] == {"name": "vdc-quickstart-bmc", "key": "password"}


def test_a_spec_with_users_or_without_machines_keeps_its_own() -> None:
    assert not builders.generates_bmc_account(cr.parse(vdc()["spec"]))  # it names admin
    body = without_users()
    body["spec"]["nodes"] = []
    assert not builders.generates_bmc_account(cr.parse(body["spec"]))
    (pod,) = builders.build_pods(vdc(), cr.parse(vdc()["spec"]), builders.Settings())
    assert "VDC_BMC_SECRET" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_the_agent_replaces_placemats_account_only_when_none_is_given(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret-Pw")
    dc = cr.load(without_users()["spec"])
    assert dc.bmc is not None and not dc.bmc.users
    mine = with_generated_admin(dc, password)
    assert mine.bmc is not None and mine.bmc.publish == dc.bmc.publish
    assert [(u.name, u.password_file) for u in mine.bmc.users] == [("admin", password)]
    assert with_generated_admin(dc, None) == dc  # standalone: Placemat's account
    named = cr.load(vdc()["spec"])
    assert with_generated_admin(named, password) == named


def test_the_status_names_the_secret() -> None:
    obs = RunObservation(phase=RunPhase.RUNNING, generation=1, bmc_secret="vdc-lab-bmc")
    assert agent_status(obs)["bmc"] == {"secretName": "vdc-lab-bmc"}
    published = RunObservation(phase=RunPhase.RUNNING, generation=1,
                               bmc_published=("10.0.0.5", 6230, 8443))  # fmt: skip
    assert agent_status(published)["bmc"] == {"host": "10.0.0.5", "ipmiPort": 6230,
                                              "redfishPort": 8443}  # fmt: skip
