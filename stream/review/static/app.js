// The review page. Every listing field goes into the page with textContent (never innerHTML): titles are
// seller input. Decisions are POSTed as JSON with X-Requested-With (and the token when the server wants one).
"use strict";

const state = {
  items: [], selected: 0, taxonomy: { categories: [], tags: [] }, byId: new Map(), token: "",
  shown: null, taxonomies: new Map(), // the model version whose taxonomy the pickers list; each version's, fetched once
};
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

async function api(path, options = {}) {
  const headers = { "X-Requested-With": "listings-review", ...(options.headers || {}) };
  if (state.token) headers["X-Review-Token"] = state.token;
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) {
    $("login").hidden = false;
    throw new Error("a review token is required");
  }
  if (!res.ok) throw new Error((await res.json()).error || res.statusText);
  return res.json();
}

function categoryLabel(c) {
  return `${c.path.join(" > ")}  [${c.id}]`;
}

// The pickers list the taxonomy of the version that classified the selected item: the worker checks a decision
// against it (another version's ids and tags are refused).
async function loadTaxonomy(version = "") {
  if (state.shown === version) return;
  if (!state.taxonomies.has(version)) {
    const query = version ? `?version=${encodeURIComponent(version)}` : "";
    state.taxonomies.set(version, await api(`/api/taxonomy${query}`));
  }
  state.shown = version;
  state.taxonomy = state.taxonomies.get(version);
  state.byId = new Map();
  const list = $("categories");
  list.replaceChildren(...state.taxonomy.categories.map((c) => {
    const option = el("option");
    option.value = categoryLabel(c);
    state.byId.set(c.id, c);
    return option;
  }));
  $("tag-names").replaceChildren(...state.taxonomy.tags.map((t) => { const o = el("option"); o.value = t; return o; }));
}

async function loadQueue() {
  const params = new URLSearchParams({
    category: $("f-category").value.trim(),
    min_confidence: $("f-min").value || "0",
    max_confidence: $("f-max").value || "1",
  });
  state.items = await api(`/api/queue?${params}`);
  state.selected = Math.min(state.selected, Math.max(0, state.items.length - 1));
  renderQueue();
}

function renderQueue() {
  const rows = state.items.map((item, i) => {
    const li = el("li", undefined, i === state.selected ? "selected" : "");
    li.dataset.index = String(i);
    li.append(el("span", item.title, "title"), el("span", item.path.join(" > "), "path"),
      el("span", item.confidence.toFixed(2), "conf"));
    li.addEventListener("click", () => select(i));
    return li;
  });
  $("queue").replaceChildren(...rows);
  if (!rows.length) $("queue").append(el("li", "Nothing to review.", "empty"));
  renderDetail();
}

function select(i) {
  state.selected = Math.max(0, Math.min(i, state.items.length - 1));
  renderQueue();
  const row = $("queue").children[state.selected];
  if (row) row.scrollIntoView({ block: "nearest" });
}

async function renderDetail() {
  const item = state.items[state.selected];
  $("detail").hidden = !item;
  if (!item) return;
  let status = "";
  try {
    await loadTaxonomy(item.model_version || "");
  } catch (err) {
    status = `Taxonomy of v${item.model_version} unavailable: ${err.message}`;
  }
  if (item !== state.items[state.selected]) return; // another item was selected meanwhile
  $("d-title").textContent = item.title;
  $("d-path").textContent = item.path.join(" > ");
  $("d-conf").textContent = `confidence ${item.confidence.toFixed(2)}`;
  $("d-alts").replaceChildren(...item.alternatives.slice(0, 4).map((a, k) => {
    const li = el("li", `${a.path.join(" > ")} (${Number(a.score).toFixed(2)})`);
    li.addEventListener("click", () => pickAlternative(k));
    return li;
  }));
  // a leaf named after the listing's brand is not in the taxonomy list: shown by its stored path (Accept keeps it)
  const current = state.byId.get(item.category_id) || { path: item.path, id: item.category_id };
  $("d-category").value = categoryLabel(current);
  $("d-tags").value = item.tags.join(", ");
  $("d-status").textContent = status;
}

function pickAlternative(k) {
  const item = state.items[state.selected];
  const alt = item && item.alternatives[k];
  if (alt) $("d-category").value = categoryLabel(state.byId.get(alt.id) || { path: alt.path, id: alt.id });
}

function chosenCategory() {
  const text = $("d-category").value;
  const match = text.match(/\[([^\]]+)\]\s*$/);
  const id = match ? match[1] : text.trim();
  return state.byId.has(id) ? id : null;
}

async function decide(decision) {
  const item = state.items[state.selected];
  if (!item) return;
  const category = decision === "accepted" ? item.category_id : chosenCategory();
  if (!category) {
    $("d-status").textContent = "Pick a category from the taxonomy.";
    return;
  }
  const tags = decision === "accepted" && $("d-tags").value.trim() === item.tags.join(", ")
    ? item.tags
    : $("d-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  const reviewer = $("reviewer").value.trim();
  localStorage.setItem("reviewer", reviewer);
  try {
    await api("/api/decision", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        item_id: item.item_id, listing_version: item.listing_version, decision, category_id: category, tags, reviewer,
      }),
    });
    state.items.splice(state.selected, 1);
    renderQueue();
    loadStats();
  } catch (err) {
    $("d-status").textContent = `Not saved: ${err.message}`;
  }
}

async function loadStats() {
  try {
    const s = await api("/api/stats");
    $("rate").textContent = s.rate_per_s;
    $("backlog").textContent = s.review_backlog;
    $("dlq").textContent = s.dlq === null ? "–" : s.dlq;
    $("accepted").textContent = s.accepted;
    $("corrected").textContent = s.corrected;
    $("accepted-share").textContent = s.accepted_share === null ? "–" : `${Math.round(s.accepted_share * 100)}%`;
  } catch (err) {
    /* the panel keeps its last figures */
  }
}

function onKey(event) {
  const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (typing) {
    if (event.key === "Enter" && document.activeElement.closest("#detail")) { event.preventDefault(); decide("corrected"); }
    if (event.key === "Escape") document.activeElement.blur();
    return;
  }
  const keys = {
    j: () => select(state.selected + 1),
    k: () => select(state.selected - 1),
    a: () => decide("accepted"),
    c: () => { $("d-category").focus(); $("d-category").select(); },
    t: () => $("d-tags").focus(),
    "/": () => $("f-category").focus(),
    1: () => pickAlternative(0), 2: () => pickAlternative(1), 3: () => pickAlternative(2), 4: () => pickAlternative(3),
  };
  if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
}

async function start() {
  state.token = sessionStorage.getItem("review-token") || "";
  $("reviewer").value = localStorage.getItem("reviewer") || "";
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token-input").value;
    sessionStorage.setItem("review-token", state.token);
    $("login").hidden = true;
    start();
  });
  $("refresh").addEventListener("click", loadQueue);
  $("accept").addEventListener("click", () => decide("accepted"));
  $("correct").addEventListener("click", () => decide("corrected"));
  for (const id of ["f-category", "f-min", "f-max"]) $(id).addEventListener("change", loadQueue);
  document.addEventListener("keydown", onKey);
  try {
    await loadTaxonomy();
    await loadQueue();
    await loadStats();
    setInterval(loadStats, 3000);
    document.body.dataset.ready = "true";
  } catch (err) {
    $("queue").replaceChildren(el("li", `Cannot load: ${err.message}`, "empty"));
  }
}

document.addEventListener("DOMContentLoaded", start);
