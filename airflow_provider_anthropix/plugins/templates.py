"""The page's HTML: Jinja2 (it comes with Airflow) with autoescaping on, no build step, no external assets."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import jinja2

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · Anthropix</title>
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
<style>
 body { font-family: system-ui, sans-serif; margin: 1rem 1.25rem; color: #1f2328; }
 h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
 table { border-collapse: collapse; width: 100%; font-size: .8rem; }
 th, td { text-align: left; vertical-align: top; padding: .3rem .4rem; border-bottom: 1px solid #d0d7de;
          white-space: nowrap; }
 td.wrap { white-space: normal; overflow-wrap: anywhere; min-width: 10rem; max-width: 20rem; }
 td.outcomes { white-space: normal; min-width: 6rem; max-width: 10rem; }
 .line { display: block; }
 td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
 .id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .76rem; }
 .bar { display: inline-block; width: 4rem; height: .7rem; background: #eaeef2; border-radius: .35rem;
        vertical-align: middle; overflow: hidden; }
 .bar > span { display: block; height: 100%; background: #cc785c; }
 .status-ended { color: #1a7f37; } .status-in_progress { color: #9a6700; } .status-canceling { color: #cf222e; }
 .error { color: #cf222e; } .muted { color: #656d76; } .small { font-size: .72rem; }
 button { padding: .3rem .9rem; border: 1px solid #cf222e; color: #cf222e; background: #fff; border-radius: .3rem; }
 dl { display: grid; grid-template-columns: max-content auto; gap: .3rem 1rem; }
 dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
</style></head><body>
{% block body %}{% endblock %}
</body></html>
"""

_MACROS = """{% macro progress(b) -%}
<span class="bar" role="progressbar" aria-valuenow="{{ b.percent }}" aria-valuemin="0" aria-valuemax="100">
<span style="width: {{ b.percent }}%"></span></span> <span class="pct">{{ b.percent }}%</span>
{%- endmacro %}
{% macro usd(value) -%}
{% if value is not none %}${{ "{:,.4f}".format(value) }}{% else %}<span class="muted">-</span>{% endif %}
{%- endmacro %}
{% macro run_link(b, ui, lines=False) -%}
{% set sep = "<br>" | safe if lines else " / " %}
<a target="_top" href="{{ ui }}/dags/{{ b.dag_id | part }}/runs/{{ b.run_id | part }}">{{ b.dag_id }}{{ sep }}{{ b.run_id }}</a>{{ sep }}<a target="_top" href="{{ ui }}/dags/{{ b.dag_id | part }}/runs/{{ b.run_id | part }}/tasks/{{ b.task_id | part }}
{%- if b.map_index >= 0 %}/mapped/{{ b.map_index }}{% endif %}">{{ b.task_id }}{% if b.map_index >= 0 %}[{{ b.map_index }}]{% endif %}</a>
{%- endmacro %}"""

_LIST = """{% extends "base" %}{% from "macros" import progress, usd, run_link %}{% block body %}
<h1>Message batches</h1>
{% if not sections %}<p class="muted">No connection of type <code>anthropix</code> that you may see.</p>{% endif %}
{% for s in sections %}
<h2 id="conn-{{ s.conn_id }}">Connection <code>{{ s.conn_id }}</code></h2>
{% if s.error %}<p class="error">{{ s.error }}</p>
{% elif not s.batches %}<p class="muted">No batches.</p>
{% else %}
<table class="batches">
<thead><tr><th>Batch</th><th>Status</th><th>Progress</th><th>Outcomes</th><th>Created</th>
<th>Ended / expires</th><th>DAG / run / task</th><th class="num">Cost</th></tr></thead>
<tbody>
{% for b in s.batches %}
<tr data-batch-id="{{ b.id }}">
<td class="id"><a href="{{ prefix }}/batches/{{ s.conn_id | part }}/{{ b.id | part }}">{{ b.id }}</a></td>
<td class="status-{{ b.processing_status }}">{{ b.processing_status }}</td>
<td>{{ progress(b) }}<span class="done line">{{ "{:,}".format(b.done) }}/{{ "{:,}".format(b.total) }}</span></td>
<td class="outcomes">{% for kind in ("succeeded", "errored", "canceled", "expired") if b.request_counts[kind] %}
<span class="line count-{{ kind }}">{{ "{:,}".format(b.request_counts[kind]) }} {{ kind }}</span>
{% else %}<span class="muted">-</span>{% endfor %}</td>
<td title="{{ b.created_at }}">{{ b.created_at | short }}</td>
<td>{% if b.ended_at %}<span title="{{ b.ended_at }}">{{ b.ended_at | short }}</span>
{% else %}<span class="muted" title="{{ b.expires_at }}">expires {{ b.expires_at | short }}</span>{% endif %}</td>
<td class="wrap">{% if b.task_id %}{{ run_link(b, ui, True) }}
{% if b.made_by == "job" %}<span class="muted small">(job of {{ b.job_batches }} batches)</span>{% endif %}
{% else %}<span class="muted">-</span>{% endif %}</td>
<td class="num">{% if b.cost_usd is not none %}{{ usd(b.cost_usd) }}
{% elif b.estimate_usd is not none %}<span title="estimated before sending">~{{ usd(b.estimate_usd) }}</span>
{% else %}<span class="muted">-</span>{% endif %}
{% if b.cost_scope != "batch" and (b.cost_usd is not none or b.estimate_usd is not none) %}<br><span class="muted small">{{ b.cost_scope }}</span>{% endif %}</td>
</tr>
{% endfor %}
</tbody></table>
{% endif %}
{% endfor %}
<p class="muted">Newest {{ limit }} batches per connection; times in UTC; cost at batch price from the exported
results' usage, or <span title="estimated before sending">~estimated</span> before sending; <em>job</em>: the
whole job's cost{% if refresh %}; refreshes every {{ refresh }} s while any is running{% endif %}.</p>
{% endblock %}"""

_DETAIL = """{% extends "base" %}{% from "macros" import progress, usd, run_link %}{% block body %}
<p><a href="{{ prefix }}/batches">&larr; All batches</a></p>
<h1>Batch <code>{{ b.id }}</code></h1>
<dl data-batch-id="{{ b.id }}">
<dt>Connection</dt><dd><code>{{ conn_id }}</code></dd>
<dt>Status</dt><dd class="status-{{ b.processing_status }}">{{ b.processing_status }}</dd>
<dt>Progress</dt><dd>{{ progress(b) }} {{ "{:,}".format(b.done) }}/{{ "{:,}".format(b.total) }} requests</dd>
{% for kind, n in b.request_counts.items() %}<dt>{{ kind }}</dt><dd>{{ "{:,}".format(n) }}</dd>{% endfor %}
<dt>Errors by type</dt><dd id="errors-by-type">
{%- if b.errored_by_type %}{% for kind, n in b.errored_by_type.items() %}<code>{{ kind }}</code> {{ "{:,}".format(n) }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- elif b.errored_by_type is not none %}none
{%- elif b.processing_status != "ended" %}<span class="muted">counted from the results once the batch ends</span>
{%- else %}<span class="muted">not known: the results can no longer be read</span>{% endif %}</dd>
<dt>Created</dt><dd>{{ b.created_at | when }}</dd>
<dt>Expires</dt><dd>{{ b.expires_at | when }} <span class="muted">(unfinished requests expire then)</span></dd>
<dt>Cancel asked</dt><dd>{{ b.cancel_initiated_at | when }}</dd>
<dt>Ended</dt><dd>{{ b.ended_at | when }}</dd>
<dt>Results downloadable until</dt><dd id="results-until">{{ b.results_until | when }}
{%- if b.archived_at %} <span class="error">(archived {{ b.archived_at | when }}: no longer downloadable)</span>{% endif %}
 <span class="muted">(29 days after creation)</span></dd>
<dt>Made by</dt><dd id="made-by">{% if b.task_id %}{{ run_link(b, ui) }}
{%- if b.made_by == "job" %} <span class="muted">(a BatchJobOperator job of {{ b.job_batches }} batches)</span>{% endif %}
{%- else %}<span class="muted">no task of this provider's operators that you may see</span>{% endif %}</dd>
<dt>Estimated cost</dt><dd id="estimate">{{ usd(b.estimate_usd) }}{% if b.estimate_usd is not none %} <span class="muted">(expected, before sending{% if b.cost_scope == "job" %}; the whole job{% endif %})</span>{% endif %}</dd>
<dt>Actual cost</dt><dd id="cost">{{ usd(b.cost_usd) }}{% if b.cost_usd is not none %} <span class="muted">(the results' token usage at batch price{% if b.cost_scope == "job" %}; the whole job{% elif b.cost_scope == "export" %}; the export of several batches{% endif %})</span>{% else %} <span class="muted">(known once the results are exported)</span>{% endif %}</dd>
<dt>Exported results</dt><dd id="results">{% if b.results %}
{%- if results_href.startswith("https://") or results_href.startswith("http://") %}<a href="{{ results_href }}" target="_blank" rel="noopener">{{ b.results }}</a>
{%- else %}<code>{{ b.results }}</code>{% endif %}{% if b.manifest %} <span class="muted">(manifest <code>{{ b.manifest }}</code>)</span>{% endif %}
{%- else %}never exported by this provider's fetch or job tasks{% endif %}</dd>
</dl>
{% if can_cancel and b.processing_status == "in_progress" %}
<p><button type="button" id="cancel" data-url="{{ prefix }}/api/batches/{{ conn_id | part }}/{{ b.id | part }}/cancel">Cancel batch</button>
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


def _path_part(value: Any) -> str:
    """One URL path segment: ``/``, ``:`` and ``+`` (run ids have them) encoded too."""
    return quote(str(value), safe="")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"base": _BASE, "macros": _MACROS, "list": _LIST, "detail": _DETAIL}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["short"] = _short
    env.filters["part"] = _path_part
    return env
