"""The page's HTML: Jinja2 (it comes with Airflow) with autoescaping on, no build step, no external assets."""

from __future__ import annotations

from typing import Any

import jinja2

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }} · Anthropix</title>
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2328; }
 h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
 table { border-collapse: collapse; width: 100%; font-size: .82rem; }
 th, td { text-align: left; padding: .3rem .45rem; border-bottom: 1px solid #d0d7de; white-space: nowrap; }
 td.wrap { white-space: normal; word-break: break-all; min-width: 8rem; }
 td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
 .bar { display: inline-block; width: 5rem; height: .7rem; background: #eaeef2; border-radius: .35rem;
        vertical-align: middle; overflow: hidden; }
 .bar > span { display: block; height: 100%; background: #cc785c; }
 .status-ended { color: #1a7f37; } .status-in_progress { color: #9a6700; } .status-canceling { color: #cf222e; }
 .error { color: #cf222e; } .muted { color: #656d76; }
 button { padding: .3rem .9rem; border: 1px solid #cf222e; color: #cf222e; background: #fff; border-radius: .3rem; }
 dl { display: grid; grid-template-columns: max-content auto; gap: .3rem 1rem; }
 dt { font-weight: 600; }
</style></head><body>
{% block body %}{% endblock %}
</body></html>
"""

_PROGRESS = """{% macro progress(b) -%}
<span class="bar" role="progressbar" aria-valuenow="{{ b.percent }}" aria-valuemin="0" aria-valuemax="100">
<span style="width: {{ b.percent }}%"></span></span> <span class="pct">{{ b.percent }}%</span>
{%- endmacro %}"""

_LIST = """{% extends "base" %}{% from "progress" import progress %}{% block body %}
<h1>Message batches</h1>
{% if not sections %}<p class="muted">No connection of type <code>anthropix</code> that you may see.</p>{% endif %}
{% for s in sections %}
<h2 id="conn-{{ s.conn_id }}">Connection <code>{{ s.conn_id }}</code></h2>
{% if s.error %}<p class="error">{{ s.error }}</p>
{% elif not s.batches %}<p class="muted">No batches.</p>
{% else %}
<table>
<thead><tr><th>Batch</th><th>Status</th><th>Progress</th><th class="num">Done</th><th class="num">Succeeded</th>
<th class="num">Errored</th><th class="num">Canceled</th><th class="num">Expired</th><th>Created</th><th>Ended</th>
<th>Expires</th><th>DAG / run / task</th><th class="num">Cost</th></tr></thead>
<tbody>
{% for b in s.batches %}
<tr data-batch-id="{{ b.id }}">
<td><a href="{{ prefix }}/batches/{{ s.conn_id | urlencode }}/{{ b.id | urlencode }}">{{ b.id }}</a></td>
<td class="status-{{ b.processing_status }}">{{ b.processing_status }}</td>
<td>{{ progress(b) }}</td>
<td class="num">{{ "{:,}".format(b.done) }}/{{ "{:,}".format(b.total) }}</td>
<td class="num">{{ "{:,}".format(b.request_counts.succeeded) }}</td>
<td class="num">{{ "{:,}".format(b.request_counts.errored) }}</td>
<td class="num">{{ "{:,}".format(b.request_counts.canceled) }}</td>
<td class="num">{{ "{:,}".format(b.request_counts.expired) }}</td>
<td title="{{ b.created_at }}">{{ b.created_at | short }}</td><td title="{{ b.ended_at or '' }}">{{ b.ended_at | short }}</td>
<td title="{{ b.expires_at }}">{{ b.expires_at | short }}</td>
<td class="wrap">{% if b.task_id %}{{ b.dag_id }} / {{ b.run_id }} / {{ b.task_id }}{% else %}<span class="muted">-</span>{% endif %}</td>
<td class="num">{% if b.estimated_cost_usd is not none %}${{ "%.4f" | format(b.estimated_cost_usd) }}{% else %}<span class="muted">-</span>{% endif %}</td>
</tr>
{% endfor %}
</tbody></table>
{% endif %}
{% endfor %}
<p class="muted">Newest {{ limit }} batches per connection; times in UTC{% if refresh %}; refreshes every {{ refresh }} s while any is running{% endif %}.</p>
{% endblock %}"""

_DETAIL = """{% extends "base" %}{% from "progress" import progress %}{% block body %}
<p><a href="{{ prefix }}/batches">&larr; All batches</a></p>
<h1>Batch <code>{{ b.id }}</code></h1>
<dl data-batch-id="{{ b.id }}">
<dt>Connection</dt><dd><code>{{ conn_id }}</code></dd>
<dt>Status</dt><dd class="status-{{ b.processing_status }}">{{ b.processing_status }}</dd>
<dt>Progress</dt><dd>{{ progress(b) }} {{ "{:,}".format(b.done) }}/{{ "{:,}".format(b.total) }} requests</dd>
{% for kind, n in b.request_counts.items() %}<dt>{{ kind }}</dt><dd>{{ "{:,}".format(n) }}</dd>{% endfor %}
<dt>Created</dt><dd>{{ b.created_at | when }}</dd>
<dt>Expires</dt><dd>{{ b.expires_at | when }}</dd>
<dt>Cancel asked</dt><dd>{{ b.cancel_initiated_at | when }}</dd>
<dt>Ended</dt><dd>{{ b.ended_at | when }}</dd>
<dt>DAG run / task</dt><dd>{% if b.task_id %}{{ b.dag_id }} / {{ b.run_id }} / {{ b.task_id }}{% else %}-{% endif %}</dd>
<dt>Estimated cost</dt><dd>{% if b.estimated_cost_usd is not none %}${{ "%.4f" | format(b.estimated_cost_usd) }} ({{ b.manifest }}){% else %}-{% endif %}</dd>
</dl>
{% if can_cancel and b.processing_status == "in_progress" %}
<p><button type="button" id="cancel" data-url="{{ prefix }}/api/batches/{{ conn_id | urlencode }}/{{ b.id | urlencode }}/cancel">Cancel batch</button>
<span id="cancel-result"></span></p>
<script>
document.getElementById("cancel").addEventListener("click", async (event) => {
  if (!confirm("Cancel this batch? Requests not yet processed will not run.")) return;
  const out = document.getElementById("cancel-result");
  const answer = await fetch(event.target.dataset.url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: "{}",
  });
  const data = await answer.json().catch(() => ({}));
  out.textContent = answer.ok ? "Now " + data.processing_status : "Refused: " + (data.detail || answer.status);
  if (answer.ok) setTimeout(() => location.reload(), 800);
});
</script>
{% endif %}
{% endblock %}"""


def _when(value: Any) -> str:
    if not value:
        return "-"
    text = str(value)
    return text[:16].replace("T", " ") + "Z" if len(text) >= 16 else text


def _short(value: Any) -> str:
    """``12-01 23:11`` (UTC): the year is rarely news on a page of recent batches; the title has it all."""
    text = _when(value)
    return text[5:16] if len(text) >= 16 else text


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"base": _BASE, "progress": _PROGRESS, "list": _LIST, "detail": _DETAIL}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["short"] = _short
    return env
