// The member's home page: reads GET /v1/homepage/{id} and re-reads it whenever the server's
// page stream (server-sent events from the page-updates topic) says the page changed.
import { artUrl, el, fetchJson, fmtTime } from "./common.js";

const state = { profile: null, country: "", device: "web", source: null, config: null,
                loading: false, again: false, version: 0, lastUpdate: null };

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setLive(on, text) {
  const live = $("live");
  live.className = on ? "live on" : "live off";
  live.textContent = text;
}

function tile(item, eager) {
  const img = el("img", { src: artUrl(item, state.config), alt: item.name,
                          width: 320, height: 180, loading: eager ? "eager" : "lazy" });
  const facts = [`score ${Number(item.score).toFixed(4)}`];
  if (item.propensity !== undefined) {
    facts.push(`propensity ${Number(item.propensity).toFixed(3)}`);
  }
  if (item.policy) facts.push(`artwork by ${item.policy} v${item.policy_version ?? 0}`);
  facts.push(`artwork ${item.artwork_id}`);
  if (item.resume_position_s !== undefined) {
    facts.push(`resume at ${Math.floor(item.resume_position_s / 60)} min`);
  }
  const tip = el("div", { className: "tip" }, facts.map((f) => el("div", {}, [f])));
  const caption = el("figcaption", {}, [
    el("span", { className: "name" }, [item.name]),
    el("span", { className: "meta" }, [
      [item.maturity_rating, ...(item.genres || []).slice(0, 2)].filter(Boolean).join(" · ")]),
  ]);
  return el("figure", { className: "tile", title: facts.join("\n"),
                        dataset: { titleId: item.title_id, artworkId: item.artwork_id } },
            [img, caption, tip]);
}

function render(page) {
  const root = $("page");
  root.replaceChildren();
  page.rows.forEach((row, i) => {
    const tiles = el("div", { className: "tiles" },
                     row.items.map((item) => tile(item, i < 3)));
    root.append(el("section", { className: "row", dataset: { rowId: row.row_id,
                                                             kind: row.kind || "" } }, [
      el("h2", {}, [row.title]),
      el("p", { className: "explanation" }, [row.explanation || ""]),
      tiles,
    ]));
  });
  if (!page.rows.length) {
    root.append(el("p", { className: "empty" }, ["Nothing to show yet for this profile."]));
  }
  state.version += 1;
  Object.assign(root.dataset, { version: String(state.version), profile: page.profile_id,
                                source: page.source, generatedAt: String(page.generated_at_ms ?? "") });
  const parts = [`${page.profile_id}: ${page.source} page`, `${page.rows.length} rows`];
  if (page.generated_at_ms) parts.push(`materialized ${fmtTime(page.generated_at_ms)}`);
  if (page.kids) parts.push("kids profile");
  if (page.variant) parts.push(`variant ${page.variant}`);
  if (state.lastUpdate) parts.push(state.lastUpdate);
  $("summary").textContent = parts.join(" · ");
}

async function loadPage() {
  if (state.loading) { state.again = true; return; }
  state.loading = true;
  try {
    do {
      state.again = false;
      const q = new URLSearchParams({ device: state.device });
      if (state.country) q.set("country", state.country);
      const page = await fetchJson(`/v1/homepage/${encodeURIComponent(state.profile)}?${q}`);
      showError("");
      render(page);
    } while (state.again);
  } catch (err) {
    showError(String(err.message || err));
  } finally {
    state.loading = false;
  }
}

function listen() {
  if (state.stream) state.stream.close();
  setLive(false, "connecting");
  const stream = new EventSource(`/ui/stream/${encodeURIComponent(state.profile)}`);
  state.stream = stream;
  stream.addEventListener("ready", (ev) => {
    const info = JSON.parse(ev.data);
    setLive(true, info.feed === "running" ? "live" : `live (feed ${info.feed})`);
    loadPage();  // subscribed first, then read: no update falls in between
  });
  stream.addEventListener("page", (ev) => {
    const update = JSON.parse(ev.data);
    const lag = Date.now() - update.generated_at_ms;
    state.lastUpdate = `updated ${fmtTime(update.generated_at_ms)} (${lag} ms after the worker wrote it)`;
    loadPage();
  });
  stream.onerror = () => setLive(false, "reconnecting");
}

function show(profile, country, device) {
  state.profile = profile;
  state.country = country || "";
  state.device = device || "web";
  state.lastUpdate = null;
  const q = new URLSearchParams({ profile });
  if (state.country) q.set("country", state.country);
  if (state.device !== "web") q.set("device", state.device);
  history.replaceState(null, "", `#${q}`);
  listen();
}

async function loadProfiles() {
  try {
    const found = await fetchJson("/ui/profiles?limit=200");
    $("known-profiles").replaceChildren(...found.profiles.map((p) => el("option", { value: p })));
    const chips = found.profiles.slice(0, 16).map((p) => el("button", {
      type: "button", className: "chip", onclick: () => {
        $("profile").value = p;
        show(p, $("country").value.trim(), $("device").value);
      } }, [p]));
    const note = found.truncated ? ["(more: type an id)"] : [];
    $("known").replaceChildren(
      el("span", { className: "hint" }, [found.profiles.length ? "Profiles with a page:" : "No pages yet."]),
      ...chips, ...note.map((t) => el("span", { className: "hint" }, [t])));
  } catch (err) {
    showError(`could not list profiles: ${err.message || err}`);
  }
}

async function main() {
  state.config = await fetchJson("/ui/config");
  $("pick").addEventListener("submit", (ev) => {
    ev.preventDefault();
    show($("profile").value.trim(), $("country").value.trim().toUpperCase(), $("device").value);
  });
  const fromHash = () => {
    const q = new URLSearchParams(location.hash.slice(1));
    const profile = q.get("profile");
    if (!profile || (profile === state.profile && (q.get("country") || "") === state.country
                     && (q.get("device") || "web") === state.device)) return;
    $("profile").value = profile;
    $("country").value = q.get("country") || "";
    $("device").value = q.get("device") || "web";
    show(profile, q.get("country"), q.get("device"));
  };
  window.addEventListener("hashchange", fromHash);  // a pasted or edited link
  fromHash();
  await loadProfiles();
}

main().catch((err) => showError(String(err.message || err)));
