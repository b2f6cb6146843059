"""`cluster up --standby` on a tcp topology: the standbys' endpoints never take a port the
topology already names (free before `up`, since nothing is bound yet), nor one another's."""

from cluster import cli, config


def test_standby_endpoints_skip_the_topology_s_own_ports(tmp_path, monkeypatch):
    ports = list(range(21000, 21020))
    path = config.write_tcp_topology(config.DEFAULT_CONFIG, tmp_path / "t.toml", ports,
                                     tmp_path / "run")
    topo = config.load(path, run_dir=str(tmp_path / "run"))
    used = [p for p in ports if f":{p}" in path.read_text()]
    # "free now": the topology's own ports first (as the OS would say of unbound ones), then the
    # same port twice, then fresh ones
    offered = iter(used + [22000, 22000] + list(range(22001, 22100)))
    monkeypatch.setattr(config, "free_tcp_ports", lambda n: [next(offered) for _ in range(n)])
    standby = cli.with_standbys(topo)  # loads: distinct endpoints are checked there too
    given = [getattr(standby.nodes[core], key) for core in config.JOURNALED_NODES
             for key in ("repl", "standby_inbox", "standby_pub", "standby_repl", "standby_private")]
    given_ports = [int(e.rpartition(":")[2]) for e in given if e.startswith("tcp://")]
    assert given_ports and not set(given_ports) & set(used)
    assert len(given_ports) == len(set(given_ports))
