"""`efajob cloudwatch dashboard|alarms|cost`: the CloudWatch dashboard, the alarms, and the
price of the config."""
from __future__ import annotations

import json
import os
from typing import Optional

import click

from efajob.cli.common import config_option, format_option, get_config, handle_errors
from efajob.errors import SinkError, UsageError


@click.group("cloudwatch")
def cloudwatch() -> None:
    """CloudWatch: put the dashboard and the alarms, estimate what the [cloudwatch] config
    costs.

    The node daemon publishes when `[cloudwatch] enabled = true` (docs/cloudwatch.md).
    """


def _region(cfg, region: Optional[str]) -> str:
    region = region or cfg.cloudwatch.region or os.environ.get("AWS_REGION") or \
        os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        from efajob.node.imds import fetch_identity

        region = fetch_identity().get("region")
    if not region:
        raise UsageError("no region: give --region or set [cloudwatch] region")
    return region


@cloudwatch.command()
@config_option
@click.option("--cluster", help="Cluster name (default: config `cluster`).")
@click.option("--region", help="Region of the metrics (default: [cloudwatch] region, "
                               "$AWS_REGION, else IMDS).")
@click.option("--name", help="Dashboard name (default: efajob-<cluster>).")
@click.option("--dry-run", is_flag=True, help="Print the dashboard JSON instead of putting it.")
@handle_errors
def dashboard(config_path: Optional[str], cluster: Optional[str], region: Optional[str],
              name: Optional[str], dry_run: bool) -> None:
    """Build the CloudWatch dashboard of a cluster and put it (PutDashboard replaces it).

    Every widget names the exact metric and dimension set the daemon publishes (explicit
    dimensions, or SEARCH expressions for per-instance sets), so no widget stays empty.
    """
    from efajob.config import validate_name
    from efajob.sinks.cloudwatch.dashboard import (build_dashboard, dashboard_name, published_specs,
                                                   validate_dashboard)
    from efajob.sinks.cloudwatch.sink import log_group

    cfg = get_config(config_path)
    cw = cfg.cloudwatch
    if cluster:
        cfg = cfg.replace(cluster=validate_name("cluster", cluster))
    region = _region(cfg, region)
    body = build_dashboard(cluster=cfg.cluster, region=region, namespace=cw.namespace,
                           period=cw.period, per_device=cw.per_device, job_metrics=cw.job_metrics,
                           log_group=log_group(cfg))
    validate_dashboard(body, published_specs(per_device=cw.per_device,
                                             job_metrics=cw.job_metrics), cw.namespace)
    name = name or dashboard_name(cfg.cluster)
    if dry_run:
        click.echo(json.dumps(body, indent=2))
        return
    from efajob.sinks.cloudwatch.client import make_client

    client = make_client(cfg, region, "cloudwatch")
    try:
        resp = client.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
    except Exception as e:  # botocore: no credentials, endpoint down, validation
        raise SinkError(f"PutDashboard {name} failed: {e}") from None
    for m in resp.get("DashboardValidationMessages") or ():
        click.echo(f"warning: {m.get('DataPath', '')}: {m.get('Message', '')}", err=True)
    widgets = sum(1 for w in body["widgets"] if w["type"] == "metric")
    click.echo(f"dashboard {name} put in {region}: {widgets} metric widgets "
               f"(namespace {cw.namespace}, cluster {cfg.cluster})")


@cloudwatch.command()
@config_option
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nodes publishing.")
@click.option("--instance-type", help="Instance type (default: config, else p5.48xlarge).")
@click.option("--jobs-per-month", type=click.IntRange(min=0), default=0, show_default=True,
              help="Jobs per month (JobId metrics and job records scale with it).")
@click.option("--job-hours", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="Mean job length in hours (JobId metrics are billed by the hour).")
@click.option("--nodes-per-job", type=click.IntRange(min=1), default=1, show_default=True)
@format_option("text", "json")
@handle_errors
def cost(config_path: Optional[str], nodes: int, instance_type: Optional[str],
         jobs_per_month: int, job_hours: float, nodes_per_job: int, fmt: str) -> None:
    """Monthly custom-metric count and estimated cost of the current [cloudwatch] config.

    Check the cardinality here before turning on per_device or job_metrics.
    """
    from efajob.sinks.cloudwatch.cost import estimate_cost, render_cost
    from efajob.sinks.cloudwatch.sink import validate_period
    from efajob.node.instances import INSTANCE_TYPES

    cfg = get_config(config_path)
    validate_period(cfg.cloudwatch.period)
    itype = instance_type or cfg.cloudwatch.instance_type or cfg.instance_type or "p5.48xlarge"
    if itype not in INSTANCE_TYPES:
        raise UsageError(f"unknown instance type {itype!r} (known: {', '.join(sorted(INSTANCE_TYPES))})")
    est = estimate_cost(cfg.cloudwatch, nodes=nodes, instance_type=itype,
                        jobs_per_month=jobs_per_month, job_hours=job_hours,
                        nodes_per_job=nodes_per_job)
    if fmt == "json":
        click.echo(json.dumps(est.to_dict(), indent=2))
    else:
        click.echo(render_cost(est), nl=False)


@cloudwatch.command()
@config_option
@click.option("--cluster", help="Cluster name (default: config `cluster`).")
@click.option("--region", help="Region of the metrics (default: [cloudwatch] region, "
                               "$AWS_REGION, else IMDS).")
@click.option("--action", "actions", multiple=True, metavar="ARN",
              help="Notify this ARN (an SNS topic) when an alarm fires; repeatable.")
@click.option("--dry-run", is_flag=True, help="Print the alarms (PutMetricAlarm arguments, JSON) "
              "and their cost instead of putting them.")
@handle_errors
def alarms(config_path: Optional[str], cluster: Optional[str], region: Optional[str],
           actions: tuple, dry_run: bool) -> None:
    """Put CloudWatch alarms on the cluster's published EFA metrics (optional: nothing
    creates them unless this runs).

    Receive drops, the drop ratio and the SRD retransmit ratio, on the ClusterName metrics,
    with the config's [thresholds]: four alarms, $0.70 a month at standard resolution. Alarms
    of the same name are replaced. The other conditions (errors per node, devices, the
    daemon, jobs) are the Prometheus rules' (docs/prometheus.md).
    """
    from efajob.config import validate_name
    from efajob.sinks.cloudwatch.alarms import build_alarms, render_cost

    cfg = get_config(config_path)
    if cluster:
        cfg = cfg.replace(cluster=validate_name("cluster", cluster))
    specs = build_alarms(cluster=cfg.cluster, namespace=cfg.cloudwatch.namespace,
                         thresholds=cfg.thresholds, actions=actions)
    if dry_run:
        click.echo(json.dumps(specs, indent=2))
        click.echo(render_cost(specs), nl=False)
        return
    region = _region(cfg, region)
    from efajob.sinks.cloudwatch.client import make_client

    client = make_client(cfg, region, "cloudwatch")
    for spec in specs:
        try:
            client.put_metric_alarm(**spec)
        except Exception as e:  # botocore: no credentials, endpoint down, validation
            raise SinkError(f"PutMetricAlarm {spec['AlarmName']} failed: {e}") from None
        click.echo(f"alarm {spec['AlarmName']} put in {region}")
    click.echo(render_cost(specs), nl=False)
