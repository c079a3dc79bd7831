"""The live view of one run: progress, charts, tables, downloads.

While the run goes, ``live_run`` redraws itself every second inside an
``st.fragment(run_every=...)`` that only reads ``RunHandle.snapshot()``;
worker threads never touch Streamlit. When the run ends the fragment asks
for one full rerun, which draws the final, static view with downloads.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from typing import Any

import pandas as pd
import streamlit as st

from fl.runs.for_pages import MODELS, NO_PRIVACY
from fl.runs.live_run import RunHandle
from fl.runs.drift import drift_sentence
from ui import baselines, charts, class_charts, experiment_charts, privacy
from ui.format import duration, epsilon_shown, is_number, num, pct, size, words
from ui.app_state import store

REFRESH_SECONDS = 1.0
FIRST_ROUND_WAIT_S = 1.5  # before round 1 a draw waits up to this long for it, so it shows when it ends, not a poll later
WAIT_TICK_S = 0.25  # while waiting, the progress is redrawn this often: each redraw is where a click (Stop) ends the wait


def run_title(config: dict[str, Any], total_rounds: int | None = None) -> str:
    rounds = total_rounds or config.get("rounds")
    if config.get("dataset") == "csv" and not config.get("csv_path"):  # a coordinator without data: no split
        return (f"each site's own CSV (label {config.get('target')}) · {config.get('model')} · "
                f"{config.get('aggregation')} · {plural(rounds, 'round')}")
    return (f"{config.get('dataset')} · {config.get('model')} · {config.get('aggregation')} · "
            f"{config.get('clients')} clients · {config.get('partition')} · {plural(rounds, 'round')}")


def plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def progress(snap: dict) -> None:
    total = max(1, snap["total_rounds"])
    done = len(snap["rounds"])
    status = snap["status"]
    label = {"starting": "Starting…", "waiting for clients": "Waiting for clients to join…",
             "running": f"Round {min(done + 1, total)} of {total} running",
             "completed": "Rounds done; computing the centralized, local-only and majority-class baselines",
             "stopped": "Stopping", "failed": "Failed"}.get(status, status)
    st.progress(min(1.0, done / total), text=f"{label} · {done}/{total} rounds done")


def headline(snap: dict) -> None:
    """Big numbers: latest accuracy (change from last round), loss, worst client, and the baselines."""
    rounds = snap["rounds"]
    last = rounds[-1] if rounds else {}
    prev = rounds[-2] if len(rounds) > 1 else {}
    eps = last.get("epsilon")
    hosted = snap.get("kind") == "hosted"
    c = st.columns((5 if hosted else 6) + (eps is not None))
    delta = (last.get("accuracy") - prev.get("accuracy")) if is_number(last.get("accuracy")) and \
        is_number(prev.get("accuracy")) else None
    shown_delta = f"{100 * delta:+.1f} pts vs last round" if delta is not None and abs(delta) >= 0.0005 else None
    c[0].metric("Global accuracy", pct(last.get("accuracy")), shown_delta)
    c[1].metric("Loss", num(last.get("loss")))
    c[2].metric("Worst client", pct(last.get("worst_client_accuracy")),
                help="The global model's accuracy on the data of the client it serves worst.")
    if hosted:  # the clients' data is theirs: no pooled, local or majority baselines
        c[3].metric("Clients joined", len(snap["clients"]))
        c[4].metric("Failures", sum(r.get("n_failures") or 0 for r in rounds))
    else:
        for column, kind in zip(c[3:6], ("centralized", "local_only", "majority")):
            value, help_text = baselines.metric(snap, kind)
            column.metric(baselines.LABELS[kind], value, help=help_text)
    if eps is not None:
        c[-1].metric("Privacy ε", epsilon_shown(eps),
                     help=f"Client-level ε at δ = {snap['config'].get('dp_delta'):g}, RDP accountant. ∞ with noise "
                          "multiplier 0: the updates are clipped, but nothing hides any client's data.")
    for note in [] if hosted else baselines.notes(snap.get("baselines")):
        st.caption(note)


def charts_block(snap: dict, key: str, done: bool = True) -> None:
    rounds, base, total = snap["rounds"], snap.get("baselines"), snap["total_rounds"]
    if not rounds:  # empty axes say nothing, and drawing them takes the browser's time as round 1 begins
        if not done:
            st.caption("The charts begin when round 1 ends.")
        return
    if total == 1:
        _one_shot_charts(snap, key)
        return
    left, right = st.columns(2)
    left.plotly_chart(charts.global_metric_figure(rounds, "accuracy", base, total), key=f"{key}-acc")
    right.plotly_chart(charts.global_metric_figure(rounds, "loss", base, total), key=f"{key}-loss")
    drift_note(snap)
    marked = [cid for cid, c in snap["clients"].items() if "malicious" in (c.get("role") or "")]
    rows = snap["client_rows"]
    if len(snap["clients"]) > charts.MAX_CLIENT_LINES:
        if any(r.get("worst_client_accuracy") is not None for r in rounds):
            st.plotly_chart(charts.client_band_figure(rounds, total), key=f"{key}-clients")
        rows = []
    metric = "eval_accuracy" if any(r.get("eval_accuracy") is not None for r in rows) else "train_accuracy"
    if rows:
        st.plotly_chart(charts.client_metric_figure(rows, metric, highlight=marked, total_rounds=total),
                        key=f"{key}-clients")
        if marked:
            st.caption(f"Dotted lines: the clients you made malicious ({', '.join(sorted(marked))}). "
                       "The server does not know who they are.")
    if any(is_number(r.get("epsilon")) for r in rounds):
        st.plotly_chart(charts.epsilon_figure(rounds, snap["config"].get("dp_delta")), key=f"{key}-eps")
    elif any(r.get("epsilon") is not None for r in rounds):  # all infinite: nothing to draw, say why
        st.caption(f"Privacy spent: ε = ∞ ({NO_PRIVACY}). With noise multiplier 0 the updates are clipped but not "
                   "noised, so there is no privacy guarantee.")
    rates = [(r["round"], r["learning_rate"]) for r in rounds if r.get("learning_rate") is not None]
    if rates and snap["config"].get("lr_schedule", "constant") != "constant":
        st.plotly_chart(experiment_charts.learning_rate_figure(rates, total), key=f"{key}-lr")
    class_block(snap, key, done)


def drift_note(snap: dict) -> None:
    """Beside the chart: the run has fallen well below its best round, and what could help."""
    sentence = drift_sentence(snap["rounds"], snap["config"])
    if sentence:
        st.warning(sentence, icon="📉")


def class_block(snap: dict, key: str, done: bool = True) -> None:
    """The chosen round's confusion matrix (global) and each class's recall per round.

    While the run goes they are drawn only on request: building them every
    second costs about 0.2 s of the interpreter a training thread shares,
    which made the page (and a Stop click) lag behind the run.
    """
    counted = class_charts.rounds_with_counts(snap["rounds"])
    if not counted:
        if snap["rounds"] and snap["rounds"][-1].get("f1_macro") is None and snap["kind"] == "hosted":
            st.caption("Per-class numbers and macro F1 are not available: a client sent no confusion counts "
                       "(a client written before them).")
        return
    by_round = {r["round"]: r for r in snap["rounds"]}
    if not done and not st.toggle("Per class: confusion matrix and recall, live", key=f"{key}-per-class",
                                  help="Each class's numbers as the rounds come; drawn once more when the run ends."):
        return
    with st.expander("Per class: confusion matrix and recall", expanded=True):
        chosen = counted[-1] if len(counted) == 1 else st.select_slider(
            "Round", counted, value=counted[-1], key=f"{key}-confusion-round")
        confusion = by_round[chosen]["confusion"]
        left, right = st.columns(2)
        left.plotly_chart(class_charts.confusion_figure(confusion["counts"], confusion["classes"],
                                                        f"Confusion matrix, round {chosen}"), key=f"{key}-confusion")
        right.plotly_chart(class_charts.recall_figure(snap["rounds"], snap["total_rounds"]), key=f"{key}-recall")
        st.dataframe(class_charts.per_class_table(confusion["counts"], confusion["classes"]), hide_index=True)
        over = "the sites' held-out rows, added up" if confusion.get("source") == "sites" else "the server's test rows"
        st.caption(f"Counted over {over}: macro F1 and balanced accuracy come from these counts, never from an "
                   "average of ratios. A class with no rows is absent, not a recall of 0.")


def _one_shot_charts(snap: dict, key: str) -> None:
    final = snap["rounds"][-1] if snap["rounds"] else {}
    method = snap["config"].get("aggregation", "")
    base = snap.get("baselines")
    left, right = st.columns(2)
    left.plotly_chart(charts.one_shot_figure(final, base, "accuracy", method), key=f"{key}-acc")
    right.plotly_chart(charts.one_shot_figure(final, base, "loss", method), key=f"{key}-loss")
    if snap["client_rows"]:
        per_client = ((base or {}).get("local_only") or {}).get("per_client")
        st.plotly_chart(charts.client_bars_figure(snap["client_rows"], per_client), key=f"{key}-clients")


LATEST_EVENTS = 3  # while the run goes and its tables are not asked for, the newest events as lines of text
EVENT_LINE_CHARS = 160  # ... each cut to this many characters


def event_line(client: Any, detail: str, width: int = EVENT_LINE_CHARS) -> str:
    """An event's sentence, led by its client's id when the sentence does not name it (a client's result), cut
    to ``width`` characters: plain text does not wrap, and the event log table has the whole sentence."""
    named = not isinstance(client, str) or not client or client in detail
    line = detail if named else f"{client}: {detail}"
    return line if len(line) <= width else line[:width - 1] + "…"


def tables_block(snap: dict, key: str, done: bool = True) -> None:
    """The metrics per round and the event log, as tables.

    While the run goes they are drawn only on request: a table redrawn every
    second cost the browser more than the three charts (bench/bench_live.py;
    docs/performance.md "The live tables on request"), and on a machine whose
    cores train the run, that put the page a poll behind. Without them the
    newest events show as lines of text, so a failure is still seen as it comes.
    """
    if not done and not st.toggle("Tables, live: metrics per round and event log", key=f"{key}-tables",
                                  help="Both tables as the rounds come; drawn once more when the run ends."):
        latest = charts.events_table(snap["events"], limit=4 * LATEST_EVENTS).head(LATEST_EVENTS)
        if len(latest):
            st.text("\n".join(f"{row.Time}  {event_line(row.Client, row.Detail)}"
                               for row in latest.itertuples()))  # plain text: a client id is not markdown
        return
    tab_metrics, tab_events = st.tabs(["Metrics per round", "Event log"])
    with tab_metrics:
        st.dataframe(charts.metrics_table(snap["rounds"]), hide_index=True)
    with tab_events:
        st.dataframe(charts.events_table(snap["events"]), hide_index=True, height=300)


def downloads(snap: dict, handle: RunHandle | None) -> None:
    """Metrics CSV, config JSON and the final model (joblib)."""
    run_id = snap["run_id"]
    metrics_csv = pd.DataFrame(snap["rounds"]).drop(columns=["type", "t", "confusion"],
                                                    errors="ignore").to_csv(index=False)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Metrics (CSV)", metrics_csv, file_name=f"{run_id}-metrics.csv", mime="text/csv",
                       key=f"dl-metrics-{run_id}")
    c2.download_button("Config (JSON)", json.dumps(snap["config"], indent=2), file_name=f"{run_id}-config.json",
                       mime="application/json", key=f"dl-config-{run_id}")
    model_buttons(run_id, c3)


def model_buttons(run_id: str, column: Any) -> None:
    """The final model and, beside it, the best round's (saying what it was selected on)."""
    try:
        stored = store().load(run_id)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        stored = None
    final = stored.model_path if stored is not None else None
    column.download_button("Final model (joblib)", final.read_bytes() if final else b"",
                           file_name=f"{run_id}-model.joblib", mime="application/octet-stream",
                           disabled=final is None, key=f"dl-model-{run_id}",
                           help="The global model with its scaling: joblib.load(f).predict(raw_rows)")
    best = stored.best_model_path if stored is not None else None
    if best is None:
        return
    summary = stored.summary
    column.download_button(f"Best model (round {summary.get('best_round')})", best.read_bytes(),
                           file_name=f"{run_id}-best_model.joblib", mime="application/octet-stream",
                           key=f"dl-best-{run_id}", help=best_model_note(summary))


def best_model_note(summary: dict) -> str:
    """What the best round was chosen on, and so how far its number can be trusted."""
    on, score = summary.get("best_selected_on"), summary.get("best_score")
    number = f" ({pct(score)})" if is_number(score) else ""
    if on == "validation":
        return f"Chosen on the server's validation split{number}; its test accuracy is an honest estimate."
    where = "test split" if on == "test" else "clients' scores"
    return (f"Chosen on the {where}{number}, the same numbers that rank it: that accuracy is optimistic. "
            "Judge it on data it has not seen.")


def chance_level(snap: dict) -> float | None:
    """1/classes: the floor when the majority-class baseline is not known (a hosted run, a failed baseline)."""
    classes = snap.get("n_classes")
    return 1.0 / classes if classes else None


def learned(snap: dict) -> bool:
    """Whether the final model beats always answering the majority class (1/classes + 2 points when that
    is unknown): only then is a finished run a success."""
    accuracy = (snap.get("final_metrics") or {}).get("accuracy")
    if not is_number(accuracy):
        return False
    majority = baselines.majority(snap)
    if majority is not None:
        return accuracy > majority["accuracy"]
    chance = chance_level(snap)
    return chance is None or accuracy > chance + 0.02


def took_part_note(snap: dict) -> None:
    """A simulation the user let start with fewer clients says how many took part (summary.json does too)."""
    planned = (snap.get("config") or {}).get("clients")
    joined = snap.get("clients_joined")
    if snap.get("kind") == "simulation" and snap["status"] == "completed" and planned and joined is not None \
            and joined < planned:
        st.warning(f"{joined} of the {planned} clients took part: the others did not join within the join timeout "
                   "(the minimum clients setting let the run start without them).")


def final_summary(snap: dict) -> None:
    status, final = snap["status"], snap.get("final_metrics") or {}
    began = snap.get("rounds_started_at") or snap["started_at"]  # not the wait for clients to join
    took = duration((snap.get("finished_at") or 0) - began) if snap.get("finished_at") else "–"
    rounds = plural(len(snap["rounds"]), "round")
    numbers = (f"accuracy {pct(final.get('accuracy'))}, loss {num(final.get('loss'))}, "
               f"macro F1 {num(final.get('f1_macro'))}")
    majority, chance = baselines.majority(snap), chance_level(snap)
    if status == "completed" and learned(snap):
        st.success(f"Finished {rounds} in {took}: {numbers}.")
    elif status == "completed" and majority is not None and is_number(final.get("accuracy")):
        st.warning(f"Finished {rounds} in {took}, but the global model does no better than always answering the "
                   f"majority class {baselines.class_name(majority.get('class'))}: accuracy "
                   f"{pct(final.get('accuracy'))} against {pct(majority['accuracy'])} for the majority class "
                   f"(final {numbers}; the majority class's macro F1 is {num(majority.get('f1_macro'))}). "
                   "Check the event log for failed clients, or try more rounds or another model.")
    elif status == "completed":
        floor = f" (guessing one class of {snap['n_classes']} scores {pct(chance)})" if chance else ""
        st.warning(f"Finished {rounds} in {took}, but the global model did not learn: {numbers}{floor}. "
                   "Check the event log for failed clients, or try more rounds or another model.")
    elif status == "stopped":
        st.warning(f"Stopped after {rounds} ({took}): {numbers}.")
    else:
        st.error(f"The run failed: {words(snap.get('error') or 'see the event log')}")
    took_part_note(snap)
    sent = sum(r.get("bytes_sent") or 0 for r in snap["rounds"])
    received = sum(r.get("bytes_received") or 0 for r in snap["rounds"])
    model = MODELS.get((snap.get("config") or {}).get("model", ""))
    what = ("Only sums crossed the sockets (quantile sketches, then gradient histograms): never a row or a model."
            if model is not None and model.statistics else "Only parameters or fitted models crossed the sockets.")
    if (snap.get("config") or {}).get("secagg"):
        last = next((r for r in reversed(snap["rounds"]) if r.get("secagg_survivors") is not None), {})
        what = ("Secure aggregation: the global model went out, each site's update came back masked; the server "
                "learned only their sum" + (f" ({last['secagg_survivors']} sites in the last one)." if last else "."))
    st.caption(f"Network: {size(sent)} sent to clients, {size(received)} received from them. {what}")


def draw(snap: dict, handle: RunHandle | None, key: str, done: bool = True, top: Any = None) -> None:
    """Everything about one run, from a snapshot; ``done`` once nothing of it is still computed. ``top``: a
    placeholder already showing the progress, to draw it in again."""
    if done:
        final_summary(snap)
    else:
        with top if top is not None else nullcontext():
            progress(snap)
        if snap.get("error"):
            st.warning(words(snap["error"]))
    headline(snap)
    charts_block(snap, key, done)
    if done and handle is not None:
        importance_block(handle, key)
        privacy.privacy_block(handle.writer.dir if handle.writer is not None else None,
                              handle.result is not None and handle.result.model is not None, key)
    tables_block(snap, key, done)
    if done:
        downloads(snap, handle)


def importance_block(handle: RunHandle, key: str) -> None:
    """The final model's feature importances (boosted trees: each feature's share of the split gain)."""
    model = handle.result.model if handle.result is not None else None
    estimator = getattr(model, "named_steps", {}).get("model", model)
    importances = getattr(estimator, "feature_importances_", None)
    if importances is None or not len(importances):
        return
    names = list(handle.server.task.feature_names or [f"x{i}" for i in range(len(importances))])
    st.plotly_chart(charts.importance_figure(names, list(importances)), key=f"{key}-importances")


def show_run(handle: RunHandle, done: bool) -> None:
    """Live while running (fragment polling the snapshot), static once done.

    ``done``: whether the run had ended as the page read it at the top of
    this script run, which drew its buttons by it. A run that ended since is
    drawn live once more: the fragment's first draw then reruns the whole
    page, so a page never shows the final view beside a run's Stop button.
    """
    few = handle.config.clients <= charts.MAX_CLIENT_LINES  # many clients: a band from the round records
    if done:
        draw(handle.snapshot(client_rows=few), handle, key=f"static-{handle.run_id}")
        return

    @st.fragment(run_every=REFRESH_SECONDS)
    def live() -> None:
        snap = handle.snapshot(client_rows=few)
        top = None
        if not snap["rounds"] and not handle.done:
            top = st.empty()
            snap = await_first_round(handle, snap, few, top)
        if handle.done:
            st.rerun(scope="app")  # one full rerun draws the final view with downloads
        draw(snap, handle, key=f"live-{handle.run_id}", done=False, top=top)

    live()


def await_first_round(handle: RunHandle, snap: dict, few: bool, top: Any) -> dict:
    """Before round 1: show the progress and wait for the round's end here, up to FIRST_ROUND_WAIT_S.

    A page that only polled would show round 1 up to a whole poll after it
    ended, on top of the Start click's own rerun; waiting for it in the draw
    that is already under way shows it at once. The progress is redrawn
    every WAIT_TICK_S (clients joining), and each redraw is a point where
    Streamlit ends the script for a click, so Stop is never held up longer.
    """
    deadline = time.monotonic() + FIRST_ROUND_WAIT_S
    while not snap["rounds"] and not handle.done and time.monotonic() < deadline:
        with top:
            progress(snap)
        handle.state.wait_for_rounds(1, min(WAIT_TICK_S, deadline - time.monotonic()))
        snap = handle.snapshot(client_rows=few)
    return snap
