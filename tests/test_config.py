"""The node config: defaults, a full file, and one clear ConfigError per kind of mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import msgspec

from drupelet.node.config import LimitsSection, NodeSection, ActorSpec, LinkSpec, NodeConfig, load, parse
from drupelet.node.errors import ConfigError, DrupeletError

FULL = """\
[node]
name = "pi-kitchen"
lattice = "home"
labels = { room = "kitchen", "board.rev" = 5 }
data_dir = "state"

[nats]
url = "nats://hub.local:4222"
embedded_host = "0.0.0.0"
embedded_port = 0
embedded_jetstream = false
connect_timeout_s = 2
creds = "creds/node.creds"

[limits]
call_deadline_ms = 250
max_memory_bytes = 1048576
max_payload_bytes = 4096
max_queue = 10
stop_timeout_s = 1.5
trap_backoff_base_ms = 20
trap_backoff_max_ms = 400

[runtime]
epoch_tick_ms = 5
compile_in_subprocess = false
cache_dir = "/var/cache/drupelet"

[providers.keyvalue]
backend = "memory"

[[actors]]
name = "counter"
file = "actors/counter.wasm"
instances = 2
config = { greeting = "hi", every = 3, loud = true }

[[actors]]
name = "echo"
file = "/opt/echo.wasm"

[[links]]
source = "counter"
interface = "wasi:keyvalue"
target = "local/keyvalue"
config = { buckets = "counts" }

[[links]]
source = "echo"
interface = "wasmcloud:messaging/consumer"
target = "pi-hall/messaging"
"""


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value), "the error names the file"
    return info.value


# -- defaults ---------------------------------------------------------------------------


def test_defaults_match_the_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = NodeConfig()
    cfg.check()
    assert cfg.lattice == NodeSection().lattice == "default"
    assert cfg.nats_url == ""  # embedded server
    assert (cfg.nats_embedded_host, cfg.nats_embedded_port, cfg.nats_embedded_jetstream) == ("127.0.0.1", 4222, True)
    for f in msgspec.structs.fields(LimitsSection):
        assert getattr(cfg, f.name) == f.default, f.name
    assert cfg.epoch_tick_ms == 10 and cfg.compile_in_subprocess is True
    assert cfg.data_dir == tmp_path / "state"
    assert cfg.compile_cache_dir == tmp_path / "state" / "cache"
    assert cfg.actors == [] and cfg.links == [] and cfg.providers == {}
    assert cfg.name  # the host name, cleaned into a valid node name


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""))
    assert cfg.lattice == "default" and cfg.max_queue == 1000 and cfg.actors == []
    assert cfg.source == str(tmp_path / "node.toml")


def test_state_directory_from_systemd_takes_the_first_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/drupelet:/var/lib/other")
    assert NodeConfig().data_dir == Path("/var/lib/drupelet")


# -- a full file ------------------------------------------------------------------------


def test_full_config_parses_into_every_field(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, FULL))
    base = tmp_path.resolve()
    assert (cfg.name, cfg.lattice) == ("pi-kitchen", "home")
    assert cfg.labels == {"room": "kitchen", "board.rev": "5"}
    assert cfg.data_dir == base / "state"
    assert cfg.nats_url == "nats://hub.local:4222"
    assert (cfg.nats_embedded_host, cfg.nats_embedded_port, cfg.nats_embedded_jetstream) == ("0.0.0.0", 0, False)
    assert cfg.nats_connect_timeout_s == 2.0 and isinstance(cfg.nats_connect_timeout_s, float)
    assert cfg.nats_creds == str(base / "creds" / "node.creds")
    assert (cfg.call_deadline_ms, cfg.max_memory_bytes, cfg.max_payload_bytes, cfg.max_queue) == \
        (250, 1 << 20, 4096, 10)
    assert (cfg.stop_timeout_s, cfg.trap_backoff_base_ms, cfg.trap_backoff_max_ms) == (1.5, 20, 400)
    assert (cfg.epoch_tick_ms, cfg.compile_in_subprocess) == (5, False)
    assert cfg.cache_dir == Path("/var/cache/drupelet") == cfg.compile_cache_dir
    assert cfg.providers == {"keyvalue": {"backend": "memory"}}
    assert cfg.actors == [
        ActorSpec(name="counter", file=base / "actors" / "counter.wasm", instances=2,
                  config={"greeting": "hi", "every": "3", "loud": "true"}),
        ActorSpec(name="echo", file=Path("/opt/echo.wasm")),
    ]
    assert cfg.links == [
        LinkSpec(source="counter", interface="wasi:keyvalue", target="local/keyvalue", config={"buckets": "counts"}),
        LinkSpec(source="echo", interface="wasmcloud:messaging/consumer", target="pi-hall/messaging"),
    ]


def test_relative_actor_file_is_resolved_against_the_config_dir_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load(write(conf_dir, '[[actors]]\nname = "a"\nfile = "../wasm/a.wasm"\n'))
    assert cfg.actors[0].file.resolve() == (tmp_path / "wasm" / "a.wasm").resolve()


def test_parse_without_a_file_resolves_against_base_dir(tmp_path: Path) -> None:
    cfg = parse({"actors": [{"name": "a", "file": "a.wasm"}]}, base_dir=tmp_path)
    assert cfg.actors[0].file == tmp_path / "a.wasm"


# -- errors: each names its key ---------------------------------------------------------


def test_unknown_section(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[nodes]\nname = "x"\n')
    assert err.key == "nodes"
    assert "nodes: unknown section" in str(err)


def test_unknown_key(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[limits]\ncall_deadline = 100\n")
    assert err.key == "limits.call_deadline"
    assert "limits.call_deadline: unknown key" in str(err)
    assert "call_deadline_ms" in str(err), "the message lists the known keys"


def test_unknown_key_in_an_actor(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[[actors]]\nname = "a"\nfile = "a.wasm"\ncount = 2\n')
    assert err.key == "actors[0].count"


def test_wrong_type(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[limits]\nmax_queue = "ten"\n')
    assert err.key == "limits.max_queue"
    assert "expected an integer" in str(err) and "'ten'" in str(err)


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[limits]\nmax_queue = true\n")
    assert err.key == "limits.max_queue"
    assert "got a boolean" in str(err)


def test_integer_is_not_a_bool(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[runtime]\ncompile_in_subprocess = 1\n")
    assert err.key == "runtime.compile_in_subprocess"


def test_section_must_be_a_table(tmp_path: Path) -> None:
    err = config_error(tmp_path, 'limits = "none"\n')
    assert err.key == "limits"


@pytest.mark.parametrize("name", ["-pi", "_pi", "pi kitchen", "pi.kitchen", "", "x" * 64])
def test_bad_node_name(tmp_path: Path, name: str) -> None:
    err = config_error(tmp_path, f'[node]\nname = "{name}"\n')
    assert err.key == "node.name"
    assert "not a valid name" in str(err)


def test_bad_lattice_name(tmp_path: Path) -> None:
    assert config_error(tmp_path, '[node]\nlattice = "a.b"\n').key == "node.lattice"


@pytest.mark.parametrize("key", ["call_deadline_ms", "max_payload_bytes", "max_queue", "max_instances"])
def test_limit_must_be_positive(tmp_path: Path, key: str) -> None:
    err = config_error(tmp_path, f"[limits]\n{key} = -1\n")
    assert err.key == f"limits.{key}"
    assert "expected an integer >= 1" in str(err) and "got -1" in str(err)


def test_every_numeric_key_has_a_range_in_its_declaration() -> None:
    from drupelet.node.config import ENTRIES, SECTIONS
    from drupelet.node.lattice.wire import meta_of

    for name, cls in {**SECTIONS, **ENTRIES}.items():
        for f in msgspec.structs.fields(cls):
            base = f.type.__origin__ if hasattr(f.type, "__metadata__") else f.type
            if base not in (int, float):
                continue
            meta = meta_of(f.type)
            assert meta is not None, f"{name}.{f.name} has no bounds"
            assert meta.ge is not None or meta.gt is not None, f"{name}.{f.name} has no lower bound"
            assert meta.le is not None or meta.lt is not None, f"{name}.{f.name} has no upper bound"


@pytest.mark.parametrize("text, key", [
    ("[limits]\nheartbeat_interval_s = 0.000001\n", "limits.heartbeat_interval_s"),
    ("[limits]\nhealth_check_interval_s = 0.000001\n", "limits.health_check_interval_s"),
    ("[limits]\nstop_timeout_s = nan\n", "limits.stop_timeout_s"),
    ("[limits]\nstop_timeout_s = inf\n", "limits.stop_timeout_s"),
    ("[limits]\nlog_lines_per_s = inf\n", "limits.log_lines_per_s"),
    ("[limits]\nmax_payload_bytes = 100000000\n", "limits.max_payload_bytes"),
    ("[limits]\nmax_payload_bytes = 4096\nactor_queue_bytes = 1024\n", "limits.actor_queue_bytes"),
    ("[limits]\nnode_queue_bytes = 1024\nactor_queue_bytes = 4096\nmax_payload_bytes = 2048\n",
     "limits.node_queue_bytes"),
    ('[limits]\nmax_instances = 4\n[[actors]]\nname = "a"\nfile = "a.wasm"\ninstances = 5\n', "actors[0].instances"),
    ('[[actors]]\nname = "a"\nfile = "a.wasm"\ninstances = 5000\n', "actors[0].instances"),
    ('[[actors]]\nname = "a"\nfile = "a.wasm"\ninstances = 0\n', "actors[0].instances"),
    ("[runtime]\ncompile_queue = -1\n", "runtime.compile_queue"),
])
def test_a_value_out_of_its_range_is_refused_at_load_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert config_error(tmp_path, text).key == key


@pytest.mark.parametrize("key", ["stop_timeout_s", "trap_backoff_base_ms"])
def test_limit_must_not_be_negative(tmp_path: Path, key: str) -> None:
    err = config_error(tmp_path, f"[limits]\n{key} = -5\n")
    assert err.key == f"limits.{key}"
    assert ">= 0, got -5" in str(err)


def test_backoff_max_below_base(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[limits]\ntrap_backoff_base_ms = 500\ntrap_backoff_max_ms = 100\n")
    assert err.key == "limits.trap_backoff_max_ms"


def test_connect_timeout_must_be_positive(tmp_path: Path) -> None:
    assert config_error(tmp_path, "[nats]\nconnect_timeout_s = 0\n").key == "nats.connect_timeout_s"


def test_zero_limit_is_refused(tmp_path: Path) -> None:
    assert config_error(tmp_path, "[runtime]\nepoch_tick_ms = 0\n").key == "runtime.epoch_tick_ms"


def test_port_out_of_range(tmp_path: Path) -> None:
    assert config_error(tmp_path, "[nats]\nembedded_port = 70000\n").key == "nats.embedded_port"


def test_bad_label(tmp_path: Path) -> None:
    assert config_error(tmp_path, '[node]\nlabels = { "bad key" = "x" }\n').key == "node.labels"


def test_missing_required_actor_key(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[[actors]]\nname = "a"\n')
    assert err.key == "actors[0].file"
    assert "actors[0].file: is required" in str(err)


def test_missing_required_link_key_names_the_entry(tmp_path: Path) -> None:
    text = ('[[links]]\nsource = "a"\ninterface = "wasi:keyvalue"\ntarget = "local/keyvalue"\n'
            '[[links]]\nsource = "a"\ninterface = "wasi:keyvalue"\n')
    assert config_error(tmp_path, text).key == "links[1].target"


def test_actors_must_be_an_array_of_tables(tmp_path: Path) -> None:
    assert config_error(tmp_path, '[actors]\nname = "a"\n').key == "actors"


def test_actor_config_values_must_be_scalars(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[[actors]]\nname = "a"\nfile = "a.wasm"\nconfig = { list = [1, 2] }\n')
    assert err.key == "actors[0].config.list"  # the culprit itself


def test_duplicate_actor_names(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[[actors]]\nname = "a"\nfile = "a.wasm"\n[[actors]]\nname = "a"\nfile = "b.wasm"\n')
    assert err.key == "actors[1].name"
    assert "'a' is declared twice" in str(err)


def test_providers_must_be_tables(tmp_path: Path) -> None:
    assert config_error(tmp_path, '[providers]\nkeyvalue = "memory"\n').key == "providers"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(b'[node]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text .* at byte 18") as info:
        load(path)
    assert str(path) in str(info.value)


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[node]\nname = "ok"\nlattice = \n')
    assert "not valid TOML" in str(err)
    assert "line 3" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        load(tmp_path / "absent.toml")


def test_config_error_is_a_drupelet_error_and_a_value_error(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[limits]\nmax_queue = 0\n")
    assert issubclass(ConfigError, DrupeletError) and issubclass(ConfigError, ValueError)
    assert err.code == "bad-config"
    assert err.path == str(tmp_path / "node.toml")


def test_check_runs_again_after_overrides() -> None:
    cfg = NodeConfig(name="ok")
    cfg.check()
    cfg.name = "not ok"
    with pytest.raises(ConfigError, match="node.name"):
        cfg.check()


# -- the CLI reports a bad config as one line -------------------------------------------


def test_up_with_a_bad_config_exits_1_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[limits]\nmax_queue = "ten"\n', name="bad.toml")
    proc = subprocess.run([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("drupelet: ")
    assert str(path) in lines[0] and "limits.max_queue" in lines[0]
    assert proc.stdout == ""
