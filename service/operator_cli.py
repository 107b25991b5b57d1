"""`toxiserve`: the operator's command line. `toxiserve rollout status|set|promote|rollback|history`
talks to a running service's admin API; `toxiserve feedback FILE` sends labels for answered requests.

    export TOXISERVE_URL=http://127.0.0.1:8000 TOXISERVE_ADMIN_KEY=...
    toxiserve rollout set --canary v3 --canary-percent 10 --reason "v3 to 10 %"

Keys are read from the environment only (a key on the command line ends up in shell history and
`ps`): TOXISERVE_ADMIN_KEY for `rollout`, TOXISERVE_API_KEY (the key that made the requests) for
`feedback`. Human-readable tables by default; `--json` prints the API's JSON for scripts.
Exit codes: 0 done; 1 the service refused or could not be reached (the error code and message on
stderr); 2 usage error.
"""

from __future__ import annotations

import json
import os

import click
import requests

DEFAULT_URL = "http://127.0.0.1:8000"


class Admin:
    def __init__(self, url: str, as_json: bool, key_variable: str = "TOXISERVE_ADMIN_KEY") -> None:
        self.url, self.as_json = url.rstrip("/"), as_json
        self.key_variable = key_variable
        self.key = os.environ.get(key_variable)

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        if not self.key:
            raise click.UsageError(f"set {self.key_variable} to a key of the service")
        try:
            response = requests.request(
                method, f"{self.url}{path}", json=body, headers={"X-API-Key": self.key}, timeout=(3, 60)
            )
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.url}: {type(exc).__name__}") from None
        try:
            answer = response.json()
        except ValueError:
            raise click.ClickException(f"{response.status_code} from {self.url}{path}, not JSON") from None
        if response.status_code >= 400:
            details = f" {json.dumps(answer['details'])}" if answer.get("details") else ""
            raise click.ClickException(
                f"{answer.get('error_code', response.status_code)}: {answer.get('message')}{details}"
            )
        return answer


def _state_table(state: dict) -> str:
    shadow = f"{state['shadow']} ({state['shadow_percent']:g} % shadowed)" if state["shadow"] else "-"
    rows = [
        ("revision", str(state["revision"])),
        ("stable", f"{state['stable']} ({100 - state['canary_percent']:g} % of routed traffic)"),
        ("canary", f"{state['canary']} ({state['canary_percent']:g} %)"),
        ("shadow", shadow),
        ("updated", f"{state['updated_at']} by {state['updated_by']}"),
        ("reason", state["reason"] or "-"),
    ]
    return "\n".join(f"{name:<9}{value}" for name, value in rows)


def _history_table(entries: list[dict]) -> str:
    lines = [f"{'revision':>8}  {'at':<29}  {'by':<10}  {'change':<40}  reason"]
    for entry in entries:
        change = ", ".join(f"{name}={value}" for name, value in sorted(entry["change"].items()))
        lines.append(f"{entry['revision']:>8}  {entry['at']:<29}  {entry['by']:<10}  {change:<40}  {entry['reason']}")
    return "\n".join(lines)


def _show(admin: Admin, answer: dict, table) -> None:
    click.echo(json.dumps(answer, indent=2, sort_keys=True) if admin.as_json else table(answer))


@click.group(epilog=__doc__.split("\n\n", 1)[1])
def cli() -> None:
    """Operate a running toxiserve service."""


@cli.group()
@click.option("--url", envvar="TOXISERVE_URL", default=DEFAULT_URL, show_default=True, help="The service (or its LB).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
@click.pass_context
def rollout(ctx: click.Context, url: str, as_json: bool) -> None:
    """Read and steer the rollout: which versions the router serves, and in what shares."""
    ctx.obj = Admin(url, as_json)


def _action_options(command):
    command = click.option("--reason", default="", help="Why: kept in the history.")(command)
    return click.option(
        "--expected-revision", type=click.IntRange(min=1), help="Refuse (409) unless the rollout is at this revision."
    )(command)


def _action_body(reason: str, expected_revision: int | None) -> dict:
    body = {"reason": reason}
    if expected_revision is not None:
        body["expected_revision"] = expected_revision
    return body


@rollout.command()
@click.pass_obj
def status(admin: Admin) -> None:
    """The current rollout state."""
    _show(admin, admin.call("GET", "/admin/rollout"), _state_table)


@rollout.command(name="set")
@click.option("--stable", help="Version for the stable arm.")
@click.option("--canary", help="Version for the canary arm.")
@click.option("--canary-percent", type=click.FloatRange(0, 100), help="Canary share of routed traffic.")
@click.option("--shadow", help="Version that shadows routed traffic ('none' to stop).")
@click.option("--shadow-percent", type=click.FloatRange(0, 100), help="Share of routed traffic shadowed.")
@_action_options
@click.pass_obj
def set_(admin: Admin, stable, canary, canary_percent, shadow, shadow_percent, reason, expected_revision) -> None:
    """Change part of the rollout (every worker of every host follows within seconds)."""
    change = {"stable": stable, "canary": canary, "canary_percent": canary_percent, "shadow_percent": shadow_percent}
    change = {name: value for name, value in change.items() if value is not None}
    if shadow is not None:
        change["shadow"] = None if shadow.lower() == "none" else shadow
    if not change:
        raise click.UsageError(
            "nothing to change: give --stable, --canary, --canary-percent, --shadow or --shadow-percent"
        )
    body = {**change, **_action_body(reason, expected_revision)}
    _show(admin, admin.call("PUT", "/admin/rollout", body), _state_table)


@rollout.command()
@_action_options
@click.pass_obj
def promote(admin: Admin, reason, expected_revision) -> None:
    """The canary becomes stable (100 % of routed traffic); the old stable stays named as canary at 0 %."""
    _show(admin, admin.call("POST", "/admin/rollout/promote", _action_body(reason, expected_revision)), _state_table)


@rollout.command()
@_action_options
@click.pass_obj
def rollback(admin: Admin, reason, expected_revision) -> None:
    """Canary share to 0 %; the canary stays named, for inspection."""
    _show(admin, admin.call("POST", "/admin/rollout/rollback", _action_body(reason, expected_revision)), _state_table)


@rollout.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Newest entries to show.")
@click.pass_obj
def history(admin: Admin, limit: int) -> None:
    """Every change, newest first."""
    answer = admin.call("GET", "/admin/rollout/history")
    answer["history"] = answer["history"][:limit]
    _show(admin, answer, lambda found: _history_table(found["history"]))


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", envvar="TOXISERVE_URL", default=DEFAULT_URL, show_default=True, help="The service (or its LB).")
@click.option("--json", "as_json", is_flag=True, help="Print every item's result as JSON.")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=500, show_default=True, help="Labels per call.")
def feedback(path: str, url: str, as_json: bool, batch_size: int) -> None:
    """Send the labels in PATH, a CSV with a header and the columns request_id,label (toxic or clean).

    Exit 0 when every label was accepted; 1 when any was refused (each refusal is listed on stderr).
    """
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"request_id", "label"} <= set(reader.fieldnames):
            raise click.UsageError(f"{path} needs a header with the columns request_id and label")
        items = [{"request_id": row["request_id"], "label": row["label"]} for row in reader]
    client = Admin(url, as_json, "TOXISERVE_API_KEY")
    results = []
    for start in range(0, len(items), batch_size):
        results += client.call("POST", "/v1/feedback", {"items": items[start : start + batch_size]})["results"]
    refused = [result for result in results if result["status"] != "accepted"]
    if as_json:
        click.echo(json.dumps({"accepted": len(results) - len(refused), "results": results}, indent=2))
    else:
        click.echo(f"{len(results) - len(refused)} of {len(items)} labels accepted")
    for result in refused:
        click.echo(f"{result['request_id']}: {result['error_code']}: {result['message']}", err=True)
    if refused:
        raise SystemExit(1)


def main() -> None:
    cli(prog_name="toxiserve")
