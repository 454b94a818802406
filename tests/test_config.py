"""The config: one place that validates values, upgrades old keys, and documents every key."""

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml

from gmatch.checkpoint import CheckpointError, load_checkpoint
from gmatch.config import Config, ConfigError, flatten, load_config, merge, to_dict, upgrade

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "override",
    [
        "model.edge=gaussian",
        "train.loss=hinge",
        "train.refit_schedule=never",
        "model.layer_types=[self,bogus]",
        "model.members=0",
        "runtime.threads=0",
    ],
)
def test_values_outside_the_allowed_set_fail_at_load_time(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, [override])


def test_allowed_values_pass():
    conf = load_config(None, ["model.edge=mlp", "train.loss=sinkhorn", "model.layer_types=[cross]"])
    assert (conf.model.edge, conf.train.loss, conf.model.layer_types) == (
        "mlp",
        "sinkhorn",
        ["cross"],
    )


def test_old_configs_upgrade_and_unsupported_old_values_refuse():
    old = {
        "threads": 1,
        "model": {
            "chunk": 64,
            "attn_chunk": 32,
            "hidden": 512,
            "proj_layers": 1,
            "share_self": False,
            "learn_prior_weight": False,
            "dim": 16,
        },
    }
    conf = merge(Config(), old)
    assert (conf.runtime.threads, conf.runtime.chunk, conf.runtime.attn_chunk, conf.model.dim) == (
        1,
        64,
        32,
        16,
    )
    for key, value in (("proj_layers", 2), ("share_self", True), ("learn_prior_weight", True)):
        with pytest.raises(ConfigError, match=f"model.{key}.*removed"):
            upgrade({"model": {key: value}})


def test_a_checkpoint_written_before_the_redraw_still_loads(tmp_path):
    """A checkpoint whose config has the pre-redraw keys (model.chunk, model.attn_chunk,
    top-level threads) and lacks options added since loads with the same settings
    (control: an unknown key is refused, so the upgrade is what makes it load)."""
    ckpt = torch.load(ROOT / "checkpoints" / "default.pt", map_location="cpu", weights_only=True)
    _, today, _ = load_checkpoint(ROOT / "checkpoints" / "default.pt")
    old = copy.deepcopy(ckpt)
    cfg = old["config"]
    cfg["model"]["chunk"] = cfg["runtime"].pop("chunk")
    cfg["model"]["attn_chunk"] = cfg["runtime"].pop("attn_chunk")
    cfg["threads"] = cfg["runtime"].pop("threads")
    for section, key in [
        ("data", "ocr_det_side"),
        ("train", "hard_negatives"),
        ("model", "rerank"),
    ]:
        cfg[section].pop(key)
    torch.save(old, tmp_path / "old.pt")
    _, conf, _ = load_checkpoint(tmp_path / "old.pt")
    assert conf.runtime.chunk == today.runtime.chunk and to_dict(conf) == to_dict(today)
    cfg["model"]["no_such_option"] = 1
    torch.save(old, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no_such_option"):
        load_checkpoint(tmp_path / "bad.pt")


def test_readme_documents_every_config_key_and_no_other():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([\w.]+)` \|", section, flags=re.M))
    assert documented == set(flatten(to_dict(Config())))


def documented_defaults_that_differ(readme: str) -> dict:
    """``{key: (README, code)}`` for every config key whose default in README's
    Configuration table is not the dataclass default (strings bare, others as repr)."""
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = dict(re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \|", section, flags=re.M))
    return {
        key: (documented.get(key), want)
        for key, value in flatten(to_dict(Config())).items()
        if documented.get(key) != (want := value if isinstance(value, str) else repr(value))
    }


def test_readme_states_every_default_as_the_code_has_it():
    """The table once said ``[]`` for data.ocr_extra_sides while the code read at 736."""
    readme = (ROOT / "README.md").read_text()
    assert documented_defaults_that_differ(readme) == {}
    # Control: a stale default in the table is caught, and names both values.
    stale = readme.replace("| `data.ocr_det_side` | `480` |", "| `data.ocr_det_side` | `736` |")
    assert documented_defaults_that_differ(stale) == {"data.ocr_det_side": ("736", "480")}


def test_environment_yml_pins_what_pyproject_pins():
    """The conda file repeats pyproject's pins (dependencies + the test and ray extras), no
    more, no less."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = set(project["dependencies"]) | set(extras["test"]) | set(extras["ray"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {p for p in pip if p != "-e ."} == pins


def test_flat_local_keys_of_earlier_versions_land_in_the_nested_sections():
    old = load_config(
        None, ["model.local_layers=2", "model.rerank=0.1", "model.local_global=false"]
    )
    new = load_config(
        None, ["model.local.layers=2", "model.rerank.share=0.1", "model.local.global_node=false"]
    )
    assert to_dict(old) == to_dict(new) != to_dict(load_config(None, []))
    assert new.model.local.layers == 2 and new.model.rerank.share == 0.1


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.local.dim=0", "must be >= 1"),
        ("model.rerank.share=1.5", "must be <= 1.0"),
        ("train.hard_negatives=0.95", "must be <= 0.9"),
        ("runtime.threads=0", "must be >= 1"),
    ],
)
def test_bounds_declared_with_their_fields_are_enforced(override, message):
    with pytest.raises(ConfigError, match=f"{override.split('=')[0]}.*{message}"):
        load_config(None, [override])
    key, value = override.split("=")
    ok = {"model.local.dim": "1", "model.rerank.share": "1.0"}.get(key)
    if ok:  # the bound itself is allowed
        load_config(None, [f"{key}={ok}"])
