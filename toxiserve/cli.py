"""`toxiserve`: the operator's command line. `toxiserve rollout status|set|promote|rollback|reset|history`
and `toxiserve rollout plan start|status|abort` talk to a running service's admin API;
`toxiserve feedback FILE` sends labels for answered requests.

    export TOXISERVE_URL=http://127.0.0.1:8000 TOXISERVE_ADMIN_KEY=...
    toxiserve rollout set --canary v3 --canary-percent 10 --reason "v3 to 10 %"

Keys never go on the command line (they would end up in shell history and `ps`): from the
environment, TOXISERVE_ADMIN_KEY for `rollout` and TOXISERVE_API_KEY (the key that made the
requests) for `feedback`, or from a file named by `--key-file` (a mounted secret, say).
Human-readable tables by default; `--json` prints the API's JSON for scripts.
Exit codes: 0 done; 1 the service refused or could not be reached (the error code and message on
stderr); 2 usage error; 3 `rollout plan status --wait` saw the plan end without a promotion.
"""

from __future__ import annotations

import json
import os
import time

import click
import requests

DEFAULT_URL = "http://127.0.0.1:8000"


class Admin:
    def __init__(self, url: str, as_json: bool, key_variable: str = "TOXISERVE_ADMIN_KEY") -> None:
        self.url, self.as_json = url.rstrip("/"), as_json
        self.key_variable = key_variable
        self.key = os.environ.get(key_variable)

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """The answer of a call that succeeded; a ClickException (exit 1) naming the error otherwise."""
        status, answer = self.request(method, path, body)
        if status >= 400:
            details = f" {json.dumps(answer['details'])}" if answer.get("details") else ""
            raise click.ClickException(f"{answer.get('error_code', status)}: {answer.get('message')}{details}")
        return answer

    def read_key_file(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                self.key = handle.read().strip()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--key-file") from None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """(HTTP status, JSON answer); a ClickException when the service cannot be reached or answers no JSON."""
        if not self.key:
            raise click.UsageError(f"set {self.key_variable}, or name a file holding the key with --key-file")
        try:
            response = requests.request(
                method, f"{self.url}{path}", json=body, headers={"X-API-Key": self.key}, timeout=(3, 60)
            )
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.url}: {type(exc).__name__}") from None
        try:
            return response.status_code, response.json()
        except ValueError:
            raise click.ClickException(f"{response.status_code} from {self.url}{path}, not JSON") from None


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
        if entry.get("decision"):  # a plan's entry: what the controller (or operator) decided
            decided = entry["decision"] + (f" x{entry['holds']}" if entry.get("holds", 1) > 1 else "")
            change = f"[{decided}] {change}".strip()
        lines.append(f"{entry['revision']:>8}  {entry['at']:<29}  {entry['by']:<10}  {change:<40}  {entry['reason']}")
    return "\n".join(lines)


def _show(admin: Admin, answer: dict, table) -> None:
    click.echo(json.dumps(answer, indent=2, sort_keys=True) if admin.as_json else table(answer))


@click.group(epilog=__doc__.split("\n\n", 1)[1])
@click.version_option(package_name="toxiserve", prog_name="toxiserve")
def cli() -> None:
    """Operate a running toxiserve service."""


KEY_FILE_HELP = "A file holding the key (instead of the environment variable)."


@cli.group()
@click.option("--url", envvar="TOXISERVE_URL", default=DEFAULT_URL, show_default=True, help="The service (or its LB).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
@click.option("--key-file", type=click.Path(dir_okay=False), help=KEY_FILE_HELP)
@click.pass_context
def rollout(ctx: click.Context, url: str, as_json: bool, key_file: str | None) -> None:
    """Read and steer the rollout: which versions the router serves, and in what shares."""
    ctx.obj = Admin(url, as_json)
    if key_file is not None:
        ctx.obj.read_key_file(key_file)


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
@click.option("--reason", required=True, help="Why (required): kept in the history.")
@click.option(
    "--expected-revision", type=click.IntRange(min=1), help="Refuse (409) unless the rollout is at this revision."
)
@click.pass_obj
def reset(admin: Admin, reason, expected_revision) -> None:
    """Re-seed the rollout from the service's settings (TOXISERVE_STABLE_VERSION, _CANARY_VERSION,
    _CANARY_PERCENT; no shadow): the way out of a stored rollout naming versions no host has."""
    _show(admin, admin.call("POST", "/admin/rollout/reset", _action_body(reason, expected_revision)), _state_table)


@rollout.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Newest entries to show.")
@click.pass_obj
def history(admin: Admin, limit: int) -> None:
    """Every change, newest first."""
    answer = admin.call("GET", "/admin/rollout/history")
    answer["history"] = answer["history"][:limit]
    _show(admin, answer, lambda found: _history_table(found["history"]))


def _value(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _plan_table(plan: dict) -> str:
    step = plan["current_step"]
    lines = [
        f"plan      {plan['id']} ({plan['status']}): {plan['canary']} against {plan['stable']}, "
        f"steps {', '.join(f'{s:g}' for s in plan['steps'])} %",
        f"step      {step['index'] + 1} of {len(plan['steps'])} at {step['percent']:g} %",
    ]
    if plan["status"] == "running":
        lines[-1] += (
            f" for {step['elapsed_seconds']:.1f} s, {step['canary_requests']} canary requests "
            f"(needs {plan['step_seconds']:g} s and {plan['min_requests']})"
        )
        lines.append(f"next      {plan['next_decision']['decision']}: {plan['next_decision']['reason']}")
        controller = plan.get("controller")
        if controller:
            lines.append(f"lease     {controller['owner']} ({controller['lease_seconds_left']:.1f} s left)")
    else:
        lines.append(f"outcome   {plan['status']} at {plan['finished_at']}: {plan['outcome']['reason']}")
    lines.append(f"{'guardrail':<18}{'status':<14}{'value':>10}  bound")
    for check in plan.get("evaluation") or []:
        relation = ">= " if check["guardrail"] in ("feedback_f1", "shadow_agreement") else "<= "
        bound = "" if check["bound"] is None else relation + _value(check["bound"])
        value = "carried" if check.get("carried") else _value(check["value"])
        lines.append(f"{check['guardrail']:<18}{check['status']:<14}{value:>10}  {bound}")
    return "\n".join(lines)


def _plan_progress(plan: dict) -> str:
    """One line of a running plan: its step, each guardrail's status, and what the next decision waits for."""
    step = plan["current_step"]
    checks = ", ".join(f"{c['guardrail']} {c['status']}" for c in plan.get("evaluation") or [])
    upcoming = plan.get("next_decision") or {}
    return (
        f"step {step['index'] + 1}/{len(plan['steps'])} at {step['percent']:g} %, "
        f"{step['canary_requests']} canary requests: {checks or 'not evaluated yet'}; "
        f"next {upcoming.get('decision', '?')}"
    )


@rollout.group()
def plan() -> None:
    """An automatic rollout: the canary through traffic steps, promoted or rolled back on evidence."""


@plan.command()
@click.option("--canary", required=True, help="The version to roll out.")
@click.option("--steps", default="10,25,50,100", show_default=True, help="Canary shares, increasing (percent).")
@click.option("--step-seconds", type=click.FloatRange(0), help="Least time at each step (default 60).")
@click.option("--min-requests", type=click.IntRange(1), help="Canary answers each step needs (default 100).")
@click.option("--interval-seconds", type=click.FloatRange(0.1), help="How often the plan is evaluated (default 10).")
@click.option(
    "--max-hold-seconds", type=click.FloatRange(0), help="A step held this long past --step-seconds rolls back."
)
@click.option(
    "--guardrail",
    "guardrail_values",
    multiple=True,
    metavar="NAME=VALUE",
    help="A guardrail bound, e.g. max_latency_ratio=1.5 or min_feedback=200; VALUE 'none' turns it off. Repeatable.",
)
@_action_options
@click.pass_obj
def start(admin: Admin, canary, steps, step_seconds, min_requests, interval_seconds, max_hold_seconds, **rest) -> None:
    """Start a plan (409 PLAN_RUNNING while one runs)."""
    try:
        shares = [float(step) for step in steps.split(",")]
    except ValueError:
        raise click.BadParameter(f"{steps!r} is not a comma-separated list of numbers", param_hint="--steps") from None
    limits = {}
    for item in rest["guardrail_values"]:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--guardrail")
        try:
            limits[name] = None if value.lower() == "none" else json.loads(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a number or 'none'", param_hint="--guardrail") from None
    body = {
        "canary": canary,
        "steps": shares,
        "step_seconds": step_seconds,
        "min_requests": min_requests,
        "interval_seconds": interval_seconds,
        "max_hold_seconds": max_hold_seconds,
        "guardrails": limits or None,
    }
    body = {name: value for name, value in body.items() if value is not None}
    body.update(_action_body(rest["reason"], rest["expected_revision"]))
    if not body["reason"]:
        del body["reason"]
    _show(admin, admin.call("PUT", "/admin/rollout/plan", body), _plan_table)


@plan.command(name="status")
@click.option("--wait", is_flag=True, help="Until the plan ends: exit 0 if promoted, 3 if rolled back or aborted.")
@click.option("--poll-seconds", type=click.FloatRange(0.1), default=2.0, show_default=True, help="With --wait.")
@click.pass_obj
def plan_status(admin: Admin, wait: bool, poll_seconds: float) -> None:
    """The plan, its step, and each guardrail's value against its bound."""
    found = admin.call("GET", "/admin/rollout/plan")
    shown = None
    while wait and found["status"] == "running":
        # The live step and guardrails on stderr, one line when they change: never silent for minutes.
        line = _plan_progress(found)
        if line != shown:
            click.echo(line, err=True)
            shown = line
        time.sleep(poll_seconds)
        found = admin.call("GET", "/admin/rollout/plan")
    _show(admin, found, _plan_table)
    if wait and found["status"] != "promoted":
        raise SystemExit(3)


@plan.command()
@click.option("--reason", default="", help="Why: kept in the history.")
@click.pass_obj
def abort(admin: Admin, reason: str) -> None:
    """Abort the running plan and roll back (canary share 0 %)."""
    _show(admin, admin.call("DELETE", "/admin/rollout/plan", {"reason": reason} if reason else {}), _plan_table)


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", envvar="TOXISERVE_URL", default=DEFAULT_URL, show_default=True, help="The service (or its LB).")
@click.option("--json", "as_json", is_flag=True, help="Print every item's result as JSON.")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=500, show_default=True, help="Labels per call.")
@click.option("--key-file", type=click.Path(dir_okay=False), help=KEY_FILE_HELP)
def feedback(path: str, url: str, as_json: bool, batch_size: int, key_file: str | None) -> None:
    """Send the labels in PATH, a CSV with a header and the columns request_id,label (toxic or clean).

    Every usable row is sent; each refused one is listed on stderr with its line number, and
    "N of M labels accepted" is printed. Exit 0 when every label was accepted, 1 when any was refused.
    """
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"request_id", "label"} <= set(reader.fieldnames):
            raise click.UsageError(f"{path} needs a header with the columns request_id and label")
        rows = [(reader.line_num, {"request_id": row["request_id"], "label": row["label"]}) for row in reader]
    client = Admin(url, as_json, "TOXISERVE_API_KEY")
    if key_file is not None:
        client.read_key_file(key_file)
    results = []  # (line, result), in file order
    for start in range(0, len(rows), batch_size):
        results += _send_labels(client, rows[start : start + batch_size])
    refused = [(line, result) for line, result in results if result["status"] != "accepted"]
    if as_json:
        shown = [{"line": line, **result} for line, result in results]
        click.echo(json.dumps({"accepted": len(results) - len(refused), "results": shown}, indent=2))
    else:
        click.echo(f"{len(results) - len(refused)} of {len(rows)} labels accepted")
    for line, result in refused:
        click.echo(f"line {line}: {result['request_id']}: {result['error_code']}: {result['message']}", err=True)
    if refused:
        raise SystemExit(1)


def _send_labels(client: Admin, rows: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """One call for the rows; when the service refuses the call as a whole (an item it cannot read),
    each row on its own, so only the unusable ones are refused and every refusal names its row."""
    status, answer = client.request("POST", "/v1/feedback", {"items": [item for _, item in rows]})
    if status == 202:
        return [(line, result) for (line, _), result in zip(rows, answer["results"], strict=True)]
    if status >= 500 or len(rows) == 1 or status in (401, 403, 429):
        raise click.ClickException(f"{answer.get('error_code', status)}: {answer.get('message')}")
    results = []
    for line, item in rows:
        status, answer = client.request("POST", "/v1/feedback", item)
        if status >= 500 or status in (401, 403, 429):
            raise click.ClickException(f"{answer.get('error_code', status)}: {answer.get('message')}")
        details = f" {json.dumps(answer['details'])}" if answer.get("details") else ""
        message = f"{answer.get('message')}{details}"
        refused = {"status": "refused", "error_code": answer.get("error_code"), "message": message}
        results.append((line, answer if status == 202 else {"request_id": item["request_id"], **refused}))
    return results


def _set_url(ctx: click.Context, _param, value: str | None) -> None:
    if value is not None:
        ctx.find_object(Admin).url = value.rstrip("/")


def _set_json(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.find_object(Admin).as_json = True


def _set_key_file(ctx: click.Context, _param, value: str | None) -> None:
    if value is not None:
        ctx.find_object(Admin).read_key_file(value)


def _accept_connection_options_after(group: click.Group) -> None:
    """`--url`, `--json` and `--key-file` after any subcommand of `group` too (`toxiserve rollout
    status --url X`), as on the group itself; given in both places, the later one wins."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_connection_options_after(command)
        command.params += [
            click.Option(["--url"], expose_value=False, callback=_set_url, help="The service (or its LB)."),
            click.Option(
                ["--json"], is_flag=True, expose_value=False, callback=_set_json, help="Print the API's JSON."
            ),
            click.Option(
                ["--key-file"],
                type=click.Path(dir_okay=False),
                expose_value=False,
                callback=_set_key_file,
                help=KEY_FILE_HELP,
            ),
        ]


_accept_connection_options_after(rollout)


def main() -> None:
    cli(prog_name="toxiserve")
