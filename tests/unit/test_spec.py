"""Manifests: defaults from the CRD, typed parsing, and bad input refused with field paths."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedkube.cli import main
from fedkube.plan import make_plan
from fedkube.spec import SpecError, parse_manifest
from fedkube.spec.reference import END, START, reference
from fedkube.spec.schema import crd

GOOD = {
    "apiVersion": "fedkube.io/v1alpha1",
    "kind": "FederatedJob",
    "metadata": {"name": "digits"},
    "spec": {
        "task": {"entrypoint": "fedkube.tasks.digits:task"},
        "data": {"partitions": 8, "partitioner": {"kind": "dirichlet", "alpha": 0.5}},
        "rounds": 30,
        "clients": {"minAvailable": 6},
    },
}


def mutate(path: str, value, base=GOOD):
    """A copy of `base` with the dotted `path` set to `value` (or deleted when value is DELETE)."""
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


DELETE = object()

BAD = [
    ("rounds as a string", mutate("spec.rounds", "ten"), "spec.rounds", "not of type"),
    ("negative rounds", mutate("spec.rounds", -1), "spec.rounds", "minimum"),
    ("zero partitions", mutate("spec.data.partitions", 0), "spec.data.partitions", "minimum"),
    ("missing task", mutate("spec.task", DELETE), "spec.task", "required"),
    ("missing minAvailable", mutate("spec.clients", {}), "spec.clients.minAvailable", "required"),
    ("minAvailable above partitions", mutate("spec.clients.minAvailable", 9), "spec.clients.minAvailable",
     "9 exceeds spec.data.partitions (8)"),
    ("unknown strategy", mutate("spec.strategy", {"name": "fedmagic"}), "spec.strategy.name", "not one of"),
    ("robust strategy with secure aggregation",
     mutate("spec.secureAggregation", {"mode": "secagg+"}, mutate("spec.strategy", {"name": "median"})),
     "spec.strategy.name", "'median' compares individual updates, which secure aggregation"),
    ("krum tolerating too many", mutate("spec.strategy", {"name": "krum", "byzantine": 2}), "spec.strategy.byzantine",
     "needs more than 6 updates a round; spec.clients.minAvailable is 6"),
    ("multi-krum selecting too many", mutate("spec.strategy", {"name": "krum", "byzantine": 1, "multiKrum": 6}),
     "spec.strategy.multiKrum", "6 exceeds the 5 honest updates"),
    ("exact sum with a robust rule", mutate("spec.strategy", {"name": "median", "exactSum": True}),
     "spec.strategy.exactSum", "'median' keeps every update, so leave it false"),
    ("exact sum with ckks", mutate("spec.secureAggregation", {"mode": "ckks"}, mutate("spec.strategy.exactSum", True)),
     "spec.strategy.exactSum", "ckks sums ciphertexts approximately"),
    ("exact sum as a string", mutate("spec.strategy.exactSum", "yes"), "spec.strategy.exactSum", "not of type"),
    ("top-k ratio on int8", mutate("spec.compression", {"kind": "int8", "ratio": 0.1}), "spec.compression.ratio",
     "only used by topk"),
    ("compression with secure aggregation",
     mutate("spec.secureAggregation", {"mode": "secagg+"}, mutate("spec.compression", {"kind": "topk"})),
     "spec.compression.kind", "'topk' compresses plaintext updates"),
    ("entrypoint that does not import", mutate("spec.task.entrypoint", "no_such_module:task"),
     "spec.task.entrypoint", "cannot import"),
    ("entrypoint without a function", mutate("spec.task.entrypoint", "fedkube.tasks.digits:nothing"),
     "spec.task.entrypoint", "no callable"),
    ("entrypoint not module:function", mutate("spec.task.entrypoint", "digits"), "spec.task.entrypoint", "match"),
    ("misspelt field", mutate("spec.clients.minAvailible", 3), "spec.clients.minAvailible", "unknown field"),
    ("fraction above one", mutate("spec.clients.fraction", 1.5), "spec.clients.fraction", "maximum"),
    ("fraction too small for quorum", mutate("spec.clients.fraction", 0.25), "spec.clients.fraction",
     "fewer than spec.clients.minAvailable"),
    ("bad partitioner", mutate("spec.data.partitioner", {"kind": "random"}), "spec.data.partitioner.kind",
     "not one of"),
    ("dirichlet alpha zero", mutate("spec.data.partitioner", {"kind": "dirichlet", "alpha": 0}),
     "spec.data.partitioner.alpha", "minimum"),
    ("override of a missing partition", mutate("spec.template", {"overrides": [{"partitions": [1, 9]}]}),
     "spec.template.overrides[0].partitions[1]", "partition 9 does not exist"),
    ("parameter of another strategy", mutate("spec.strategy", {"name": "fedavg", "mu": 0.1}), "spec.strategy.mu",
     "only used by fedprox"),
    ("wrong kind", mutate("kind", "Job"), "kind", "not 'FederatedJob'"),
    ("bad name", mutate("metadata.name", "Digits_1"), "metadata.name", "DNS-1123"),
    ("checkpoint uri scheme", mutate("spec.checkpoint", {"uri": "ftp://x"}), "spec.checkpoint.uri", "match"),
    ("zero noise", mutate("spec.privacy", {"noiseMultiplier": 0, "clippingNorm": 1.0}),
     "spec.privacy.noiseMultiplier", "minimum"),
    ("negative clipping norm", mutate("spec.privacy", {"noiseMultiplier": 1.0, "clippingNorm": -1}),
     "spec.privacy.clippingNorm", "minimum"),
    ("delta of one participant", mutate("spec.privacy", {"noiseMultiplier": 1.0, "clippingNorm": 1.0,
                                                          "delta": 0.125}), "spec.privacy.delta", "not below 1/8"),
    ("count noise below the noise", mutate("spec.privacy", {"noiseMultiplier": 1.0, "clippingNorm": 1.0,
                                                             "adaptiveClipping": {"countNoiseMultiplier": 0.5}}),
     "spec.privacy.adaptiveClipping.countNoiseMultiplier", "must exceed"),
    ("pld with sampling without replacement",
     mutate("spec.privacy", {"noiseMultiplier": 1.0, "clippingNorm": 1.0, "accountant": "pld"},
            mutate("spec.clients.perRound", 6)), "spec.privacy.accountant", "sampling without replacement"),
    ("adaptive clipping at sample level",
     mutate("spec.privacy", {"noiseMultiplier": 1.0, "clippingNorm": 1.0, "level": "sample",
                             "adaptiveClipping": {}}), "spec.privacy.adaptiveClipping", "only applies to level client"),
]


@pytest.mark.parametrize("doc, path, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_manifest_is_refused_with_its_field_path(tmp_path, capsys, doc, path, message):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: " in err and message in err, err


def test_every_error_is_reported_at_once():
    doc = mutate("spec.rounds", -1, mutate("spec.clients.fraction", 7))
    with pytest.raises(SpecError) as info:
        parse_manifest(doc)
    assert {e.path for e in info.value.errors} == {"spec.rounds", "spec.clients.fraction"}


def test_defaults_come_from_the_crd():
    job = parse_manifest(GOOD)
    assert job.spec.clients.round_timeout_seconds == 120
    assert job.spec.clients.optimizer.name == "sgd" and job.spec.clients.optimizer.lr == 0.05
    assert job.spec.strategy.name == "fedavg" and job.spec.checkpoint.keep_last == 3
    assert job.spec.strategy.exact_sum is False
    assert job.manifest["spec"]["scheduling"]["suspend"] is False
    assert job.namespace == "default"


def test_plan_applies_overrides_per_partition():
    doc = mutate("spec.template", {
        "client": {"image": "trainer:1", "resources": {"limits": {"cpu": "1"}}},
        "overrides": [{"partitions": [0, 1], "resources": {"limits": {"nvidia.com/gpu": 1}},
                       "nodeSelector": {"gpu": "a100"}}]})
    plan = make_plan(parse_manifest(doc))
    assert plan.clients[0].pod.resources == {"limits": {"nvidia.com/gpu": 1}}
    assert plan.clients[1].pod.node_selector == {"gpu": "a100"}
    assert plan.clients[2].pod.resources == {"limits": {"cpu": "1"}} and plan.clients[2].pod.node_selector is None
    assert all(c.pod.image == "trainer:1" for c in plan.clients)
    assert plan.aggregator.clients_per_round == 8 and plan.aggregator.min_available == 6


def test_multi_document_file_and_console_script(tmp_path):
    manifest = tmp_path / "jobs.yaml"
    manifest.write_text(yaml.safe_dump_all([GOOD, mutate("metadata.name", "second")]))
    done = subprocess.run([sys.executable, "-m", "fedkube.cli", "validate", str(manifest)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "digits: ok" in done.stdout and "second: ok" in done.stdout


def test_yaml_syntax_error_is_reported(tmp_path, capsys):
    manifest = tmp_path / "job.yaml"
    manifest.write_text("spec: [unclosed\n")
    assert main(["validate", str(manifest)]) == 1
    assert "(yaml)" in capsys.readouterr().err


def test_crd_names_and_printer_columns():
    spec = crd()["spec"]
    assert (spec["group"], spec["names"]["kind"], spec["names"]["plural"]) == ("fedkube.io", "FederatedJob",
                                                                            "federatedjobs")
    assert spec["names"]["shortNames"] == ["fj"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"].upper() for c in version["additionalPrinterColumns"]] == [
        "PHASE", "ROUND", "ACCURACY", "EPSILON", "AGE"]


def test_readme_manifest_reference_matches_the_crd():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split(START + "\n", 1)[1].split(END, 1)[0]
    assert section == reference(), "regenerate with `python -m fedkube.spec.reference`"


EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_shipped_example_validates_and_plans(example):
    assert main(["validate", str(example)]) == 0
    doc = yaml.safe_load(example.read_text())
    assert len(make_plan(parse_manifest(doc)).clients) == doc["spec"]["data"]["partitions"]


def test_the_noniid_examples_differ_only_in_their_strategy():
    """bench/noniid_digits.py compares strategies: anything else differing would bias its table."""
    docs = {e.stem: yaml.safe_load(e.read_text()) for e in EXAMPLES if e.stem.startswith("digits-noniid-")}
    assert len(docs) == 3
    for doc in docs.values():
        doc["spec"].pop("strategy")
        doc["metadata"].pop("name")
    first, *others = docs.values()
    assert all(other == first for other in others)
