// The operators' view: GET /ui/ops every second.
import { el, fetchJson, fmtTime } from "./common.js";

const $ = (id) => document.getElementById(id);
let previous = null;

function ms(v) {
  return v === null || v === undefined ? "-" : `${Math.round(v)} ms`;
}

function fill(tableId, rows) {
  $(tableId).querySelector("tbody").replaceChildren(
    ...rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, [c ?? "-"])))));
}

function render(data) {
  const feed = data.feed;
  const live = $("feed");
  live.className = feed.status === "running" && !feed.error ? "live on" : "live off";
  live.textContent = `feed: ${feed.status}${feed.error ? ` (${feed.error})` : ""}`;
  $("updated").textContent = `read ${fmtTime(data.at_ms)} · ${feed.page_updates_seen} page ` +
    `updates seen · profiles watched on this server: ${data.streams.profiles_watched}`;

  const dt = previous ? (data.at_ms - previous.at_ms) / 1000 : 0;
  const names = Object.keys(data.counters).sort();
  fill("counters", names.map((name) => {
    const now = data.counters[name];
    const rate = dt > 0 && previous.counters[name] !== undefined
      ? ((now - previous.counters[name]) / dt).toFixed(1) : "-";
    return [name, String(now), rate];
  }));
  $("counters").dataset.count = String(names.length);

  const f = feed.freshness;
  fill("freshness", [
    ["samples (last minute)", String(f.samples)],
    ["event → page p50", ms(f.event_to_page_p50_ms)],
    ["event → page p99", ms(f.event_to_page_p99_ms)],
    ["page → this server p50", ms(f.page_to_server_p50_ms)],
    ["page → this server p99", ms(f.page_to_server_p99_ms)],
  ]);

  $("lag-note").textContent = data.notes.lag;
  fill("lag", feed.lag.map((r) => [r.topic, String(r.partition), r.committed === null ? "none" : String(r.committed),
                                   String(r.high_watermark ?? "-"), String(r.lag ?? "-")]));

  const letters = feed.dead_letters.length ? feed.dead_letters.map((d) => [
    fmtTime(d.failed_at_ms),
    d.source_topic ? `${d.source_topic}[${d.partition}]@${d.source_offset}` : "-",
    d.reason, d.error_type, d.event_id || "-"]) : [["none so far", "", "", "", ""]];
  fill("dead-letters", letters);
  $("dead-letters").dataset.count = String(feed.dead_letters.length);
  previous = data;
}

async function tick() {
  try {
    render(await fetchJson("/ui/ops"));
    $("error").hidden = true;
  } catch (err) {
    $("error").textContent = String(err.message || err);
    $("error").hidden = false;
  }
  setTimeout(tick, 1000);
}

tick();
