// Small helpers shared by the home-page and the operators' views.

// An element with properties (dataset and on* handlers included) and children.
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return node;
}

// GET a JSON document; an error response throws with the server's message. When the
// server wants an API key (401), ask for it once and keep it in the homestream_key cookie,
// which every later request and the page's event stream send along.
export async function fetchJson(url, askedForKey = false) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401 && !askedForKey) {
    const key = window.prompt(`${body.error || "API key needed"}: enter the API key`);
    if (key) {
      document.cookie = `homestream_key=${encodeURIComponent(key)}; path=/; SameSite=Strict`;
      return fetchJson(url, true);
    }
  }
  if (!resp.ok) throw new Error(`${resp.status}: ${body.error || resp.statusText}`);
  return body;
}

// The image to show for an item: the server's placeholder for synthetic artwork URLs
// (under HOMESTREAM_ARTWORK_BASE_URL), the artwork URL itself otherwise.
export function artUrl(item, config) {
  const url = item.artwork_url || "";
  if (config && (!url || url.startsWith(config.artwork_base_url))) {
    return config.placeholder_art
      .replace("{title_id}", encodeURIComponent(item.title_id))
      .replace("{artwork_id}", encodeURIComponent(item.artwork_id));
  }
  return url;
}

export function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "-";
}
