"""spec.faults in the agent: which listed faults a pod applies, and how they are told apart;
what of a CR's spec replaces the pod."""

from __future__ import annotations

import argparse

from vdc_operator.plugin import fault_node, take_plugin_options
from vdc_runtime.agent.faults import key, own
from vdc_runtime.resource.spec import rebuilt_from

DOWN = {"kind": "link", "target": "w1:eth0", "down": True}
SPLIT = {"kind": "partition", "between": ["w1"], "and": ["boot"]}
ACROSS = {"kind": "partition", "between": ["w1"], "and": ["w9"]}


def test_a_pod_applies_the_faults_whose_every_name_is_its_own() -> None:
    mine = own([DOWN, SPLIT, ACROSS], {"w1", "boot"})
    assert list(mine.values()) == [DOWN, SPLIT]
    assert own([DOWN], {"w2"}) == {}


def test_the_same_fault_listed_again_is_the_same() -> None:
    reordered = {"down": True, "target": "w1:eth0", "kind": "link"}
    assert key(reordered) == key(DOWN)
    assert key({**DOWN, "for": "60s"}) != key(DOWN)


def test_faults_do_not_replace_the_pod() -> None:
    spec = {"nodes": [{"name": "w1"}], "faults": [DOWN]}
    assert rebuilt_from(spec) == {"nodes": [{"name": "w1"}]}
    assert rebuilt_from(spec) == rebuilt_from({"nodes": [{"name": "w1"}]})


def test_the_plugin_asks_the_pod_of_the_faults_target() -> None:
    assert fault_node(["add", "link", "w1:eth0", "--down"]) == "w1"
    assert fault_node(["add", "machine", "w2", "--hang"]) == "w2"
    assert fault_node(["add", "partition", "--between", "a", "--and", "b"]) is None
    assert fault_node(["list"]) is None


def test_the_plugins_options_after_the_fault_command() -> None:
    args = argparse.Namespace(namespace=None, context=None, kubeconfig=None)
    rest = take_plugin_options(args, ["list", "-n", "lab", "--context=ci"])
    assert rest == ["list"] and (args.namespace, args.context) == ("lab", "ci")
    args = argparse.Namespace(namespace=None, context=None, kubeconfig=None)
    argv = ["add", "link", "w1:eth0", "--loss", "30%", "--for", "60s"]
    assert take_plugin_options(args, argv) == argv and args.namespace is None
