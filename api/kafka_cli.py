"""``sipledger kafka init-topics``: create the product's topics on a Kafka cluster.

The init job of a deployment on an external cluster (compose/README.md): every
topic `up` creates on its embedded broker (``Up.topics``, the one list), with
``[kafka] partitions`` and ``[kafka] replication_factor``, through the same
``ensure_topics_sync`` as `up`.  Idempotent: a topic that exists keeps its
partitions (a different count is reported, not changed).
"""
from __future__ import annotations

import typer

from proxy.infra.cli import fail

kafka_app = typer.Typer(help="The Kafka topics (external clusters).", no_args_is_help=True)


@kafka_app.command("init-topics")
def init_topics(ctx: typer.Context,
                bootstrap: str = typer.Option(None, "--bootstrap",
                                              help="Bootstrap servers (overrides kafka.bootstrap_servers)."),
                timeout: float = typer.Option(30.0, "--timeout", min=1.0,
                                              help="Seconds to wait for the cluster.")) -> None:
    """Create the topics with their partitions and replication; print one line per topic."""
    from proxy.infra.kafka import ensure_topics_sync

    from .supervisor import Up
    obj = ctx.obj
    config = obj.config
    if bootstrap:
        config = config.with_bootstrap(bootstrap)
    if not config.kafka.bootstrap_servers:
        fail("no Kafka cluster: set kafka.bootstrap_servers (or --bootstrap)", 2)
    wanted = Up(config, obj.data_dir, obj.config_file).topics()
    try:
        counts = ensure_topics_sync(config.kafka, wanted, timeout=timeout)
    except Exception as exc:
        fail(f"creating topics on {config.kafka.bootstrap_servers}: {str(exc) or type(exc).__name__}")
    for name, partitions in wanted.items():
        note = "" if counts[name] == partitions else f" (existed with {counts[name]})"
        typer.echo(f"{name} partitions={partitions}{note} replication={config.kafka.replication_factor}")
