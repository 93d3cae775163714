// meshkit dashboard: one hand-written script, no framework, no build step.
// Every piece of data reaches the page through textContent / text nodes (el() below):
// nothing from etcd is ever parsed as HTML.
"use strict";

(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const page = document.body.dataset.page || "";

  // ---- DOM helpers ---------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = String(v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const $ = (id) => document.getElementById(id);

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function banner(text, kind) {
    const b = $("banner");
    if (!b) return;
    if (!text) {
      b.hidden = true;
      clear(b);
      return;
    }
    b.className = "banner " + (kind || "error");
    clear(b).append(text);
    b.hidden = false;
  }

  function humanBytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }

  function when(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  // ---- bytes <-> base64 (keys are bytes; URLs carry URL-safe base64) --------------------

  function b64FromBytes(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function bytesFromB64(text) {
    let t = (text || "").replace(/-/g, "+").replace(/_/g, "/");
    while (t.length % 4) t += "=";
    const s = atob(t);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  const textToB64 = (text) => b64FromBytes(new TextEncoder().encode(text));
  const lossyText = (bytes) => new TextDecoder("utf-8", { fatal: false }).decode(bytes);

  // ---- server calls --------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, data) {
      super(message);
      this.status = status;
      this.data = data;
    }
  }

  function toLogin() {
    location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
  }

  async function api(path, body) {
    const opts = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = csrf;
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    let data;
    try {
      data = await r.json();
    } catch (e) {
      data = { error: "HTTP " + r.status };
    }
    if (r.status === 401 && data && data.login) {
      toLogin();
      throw new ApiError(401, data.error || "log in", data);
    }
    if (!r.ok && r.status !== 409) throw new ApiError(r.status, data.error || "HTTP " + r.status, data);
    return { status: r.status, data };
  }

  async function checkSession() {
    try {
      await api("/api/session");
    } catch (e) {
      /* api() already went to the login page on 401 */
    }
  }

  function setLive(on, text) {
    const dot = $("live");
    if (dot) dot.className = "dot " + (on ? "on" : "off");
    if (text !== undefined && $("updated")) $("updated").textContent = text;
  }

  // An EventSource whose named events go to handlers (data is JSON).
  function stream(path, handlers) {
    const es = new EventSource(path);
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        fn(data);
      });
    }
    es.addEventListener("failure", (ev) => {
      let msg = "the live stream failed";
      try {
        msg = JSON.parse(ev.data).error;
      } catch (e) {
        /* keep the generic text */
      }
      banner(msg);
      setLive(false, "stopped: " + msg);
      es.close();
      checkSession();
    });
    es.onopen = () => setLive(true);
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        setLive(false, "stopped");
        banner("Live updates stopped: reload the page to try again.");
        checkSession();
      } else {
        setLive(false, "reconnecting…");
      }
    };
    return es;
  }

  // ---- lease countdowns ------------------------------------------------------------------

  const ttls = new Map(); // lease hex -> {ttl, at}

  function setTtls(map) {
    const now = performance.now();
    for (const [lease, ttl] of Object.entries(map || {})) ttls.set(lease, { ttl, at: now });
    tick();
  }

  function ttlText(lease) {
    if (!lease) return "";
    const t = ttls.get(lease);
    if (!t || t.ttl === null || t.ttl === undefined) return "?";
    if (t.ttl < 0) return "expired";
    const left = Math.max(0, Math.round(t.ttl - (performance.now() - t.at) / 1000));
    return left + " s";
  }

  function ttlCell(tag, lease) {
    return el(tag, { class: "ttl", dataset: { lease: lease || "" } }, ttlText(lease));
  }

  function tick() {
    for (const node of document.querySelectorAll("[data-lease]")) {
      node.textContent = ttlText(node.dataset.lease);
    }
  }
  setInterval(tick, 1000);

  // ---- confirmation box (no browser dialogs) --------------------------------------------

  function confirmBox(container, question, okLabel, onOk) {
    const box = el("div", { class: "confirm", role: "alertdialog" });
    const ok = el("button", { type: "button", class: "danger", id: "confirm-ok" }, okLabel);
    const cancel = el("button", { type: "button", id: "confirm-cancel" }, "Cancel");
    ok.addEventListener("click", async () => {
      ok.disabled = true;
      cancel.disabled = true;
      try {
        await onOk();
      } finally {
        box.remove();
      }
    });
    cancel.addEventListener("click", () => box.remove());
    box.append(el("p", {}, question), ok, " ", cancel);
    for (const old of container.querySelectorAll(".confirm")) old.remove();
    container.append(box);
    ok.focus();
    return box;
  }

  function notice(container, text, kind) {
    for (const old of container.querySelectorAll(".notice")) old.remove();
    const n = el("p", { class: "notice " + (kind || "ok"), role: "status" }, text);
    container.prepend(n);
    return n;
  }

  // ======================================================================================
  // Members
  // ======================================================================================

  function membersPage() {
    stream("/events/members", {
      members: (snap) => {
        banner(null);
        renderMembers(snap);
        setLive(true, "updated " + when(snap.time));
      },
      "members-error": (d) => {
        banner("status: " + d.error);
        setLive(false, "last reading failed at " + when(d.time));
      },
    });
  }

  function renderMembers(snap) {
    const leader = snap.members.find((m) => m.is_leader);
    clear($("cluster")).append(
      el("span", {}, "cluster ", el("code", {}, snap.cluster_id)),
      el("span", {}, "leader ", el("b", { id: "leader-name" }, leader ? leader.name || leader.id : "none")),
      el("span", {}, "raft term ", el("b", { id: "raft-term" }, snap.raft_term)),
      el("span", {}, "revision ", el("b", {}, snap.revision)),
      el("span", {}, snap.members.length + " member" + (snap.members.length === 1 ? "" : "s")),
    );
    const body = clear($("members"));
    for (const m of snap.members) {
      const st = m.status;
      const h = m.health || {};
      const role = m.is_leader ? "leader" : m.is_learner ? "learner" : st ? "follower" : "?";
      body.append(
        el(
          "tr",
          { class: m.is_leader ? "leader" : "", dataset: { member: m.id } },
          el("td", {}, m.name || "(unstarted)"),
          el("td", {}, el("code", {}, m.id)),
          el("td", {}, m.client_urls.join(", ")),
          el("td", {}, el("span", { class: "badge " + role }, role)),
          el("td", {}, st ? st.version : ""),
          el("td", {}, st ? st.raft_term : ""),
          el("td", {}, st ? st.raft_index : ""),
          el("td", {}, st ? st.raft_applied_index : ""),
          el("td", {}, st ? humanBytes(st.db_size) : ""),
          el("td", {}, st ? humanBytes(st.db_size_in_use) : ""),
          el(
            "td",
            { class: h.healthy ? "ok" : "bad" },
            h.healthy ? "healthy" : "unhealthy",
            h.took_ms !== null && h.took_ms !== undefined ? " (" + h.took_ms + " ms)" : "",
            h.error ? el("div", { class: "small" }, h.error) : null,
          ),
          el("td", { class: "small" }, [m.status_error, ...(st ? st.errors : [])].filter(Boolean).join("; ")),
        ),
      );
    }
    const alarms = clear($("alarms"));
    if (snap.alarms_error) alarms.append(el("li", { class: "error" }, "could not list alarms: " + snap.alarms_error));
    else if (!snap.alarms.length) alarms.append(el("li", { class: "ok" }, "no alarms"));
    for (const a of snap.alarms) alarms.append(el("li", { class: "bad" }, a.alarm + " on member " + a.member));
  }

  // ======================================================================================
  // Keys
  // ======================================================================================

  const keysState = {
    prefix: "", // base64 of the prefix bytes
    selected: null, // base64 of the shown key
    shown: null, // the shown key's data (from /api/keys/get)
    editing: false,
    truncated: false,
    es: null,
    items: new Map(), // "d:"/"k:" + base64 -> li
  };

  function keysPage() {
    const params = new URLSearchParams(location.search);
    $("prefix-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      navigate(textToB64($("prefix-input").value), null);
    });
    $("new-key").addEventListener("click", () => newKeyForm());
    window.addEventListener("popstate", () => {
      const p = new URLSearchParams(location.search);
      openPrefix(p.get("prefix") || "", p.get("key"));
    });
    openPrefix(params.get("prefix") || "", params.get("key"));
  }

  function keysUrl(prefix, key) {
    const p = new URLSearchParams();
    if (prefix) p.set("prefix", prefix);
    if (key) p.set("key", key);
    const q = p.toString();
    return "/keys" + (q ? "?" + q : "");
  }

  function navigate(prefix, key) {
    history.pushState(null, "", keysUrl(prefix, key));
    openPrefix(prefix, key);
  }

  function renderCrumbs(prefixB64) {
    const bytes = bytesFromB64(prefixB64);
    const nav = clear($("crumbs"));
    nav.append(el("a", { href: keysUrl("", null), class: "crumb", onclick: crumbClick("") }, "(root)"));
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0x2f || i === bytes.length - 1) {
        const upto = bytes.slice(0, i + 1);
        const b = b64FromBytes(upto);
        nav.append(" ", el("a", { href: keysUrl(b, null), class: "crumb", onclick: crumbClick(b) },
          lossyText(bytes.slice(start, i + 1))));
        start = i + 1;
      }
    }
  }

  function crumbClick(prefix) {
    return (ev) => {
      ev.preventDefault();
      navigate(prefix, null);
    };
  }

  async function openPrefix(prefix, key) {
    keysState.prefix = prefix;
    if (keysState.es) keysState.es.close();
    keysState.es = null;
    $("prefix-input").value = lossyText(bytesFromB64(prefix));
    renderCrumbs(prefix);
    const list = clear($("children"));
    keysState.items.clear();
    let listing;
    try {
      listing = (await api("/api/keys/list?prefix=" + encodeURIComponent(prefix))).data;
    } catch (e) {
      $("listing-meta").textContent = "";
      list.append(el("li", { class: "error", id: "list-error" }, e.message));
      if (key) showKey(key);
      return;
    }
    banner(null);
    keysState.truncated = listing.truncated;
    for (const c of listing.children) upsertChild(c, false);
    listingMeta(listing.revision);
    keysState.es = stream(
      "/events/keys?prefix=" + encodeURIComponent(prefix) + "&revision=" + listing.revision,
      {
        change: applyKeyChange,
        resync: () => openPrefix(keysState.prefix, keysState.selected),
      },
    );
    if (key) showKey(key);
    else showNothing();
  }

  function listingMeta(revision) {
    const n = keysState.items.size;
    $("listing-meta").textContent = n + " entr" + (n === 1 ? "y" : "ies") + " at revision " + revision +
      (keysState.truncated ? " (list cut: narrow the prefix)" : "");
  }

  function childId(c) {
    return (c.dir ? "d:" : "k:") + c.key;
  }

  function childItem(c) {
    if (c.dir) {
      return el(
        "li",
        { class: "dir", dataset: { key: c.key } },
        el("a", { href: keysUrl(c.key, null), class: "child", onclick: (ev) => { ev.preventDefault(); navigate(c.key, null); } },
          c.name),
      );
    }
    return el(
      "li",
      { class: "leaf" + (c.key === keysState.selected ? " selected" : ""), dataset: { key: c.key } },
      el("a", { href: keysUrl(keysState.prefix, c.key), class: "child", onclick: (ev) => { ev.preventDefault(); selectKey(c.key); } },
        c.name === "" ? "(empty name)" : c.name),
      el("span", { class: "small" }, " v" + c.version + " @" + c.mod_revision),
      c.lease ? el("span", { class: "badge lease" }, "lease " + c.lease) : null,
    );
  }

  function upsertChild(c, fresh) {
    const id = childId(c);
    const li = childItem(c);
    if (fresh) li.classList.add("fresh");
    const list = $("children");
    const old = keysState.items.get(id);
    keysState.items.set(id, li);
    li.dataset.sort = (c.dir ? "0" : "1") + c.name;
    if (old) {
      old.replaceWith(li);
      return;
    }
    for (const other of list.children) {
      if (other.dataset.sort !== undefined && other.dataset.sort > li.dataset.sort) {
        list.insertBefore(li, other);
        return;
      }
    }
    list.append(li);
  }

  function applyKeyChange(ch) {
    for (const c of ch.upserts) upsertChild(c, true);
    for (const r of ch.removed) {
      const id = (r.dir ? "d:" : "k:") + r.key;
      const li = keysState.items.get(id);
      if (li) li.remove();
      keysState.items.delete(id);
    }
    listingMeta(ch.revision);
    if (keysState.selected && ch.touched.some((t) => t.key === keysState.selected)) {
      if (keysState.editing) {
        notice($("detail"), "This key changed meanwhile (revision " + ch.revision + "): saving will be refused; cancel to see it.", "warn");
      } else {
        showKey(keysState.selected);
      }
    }
  }

  function selectKey(key) {
    history.pushState(null, "", keysUrl(keysState.prefix, key));
    showKey(key);
  }

  function showNothing() {
    keysState.selected = null;
    keysState.shown = null;
    keysState.editing = false;
    clear($("detail")).append(el("p", { class: "note" }, "Choose a key."));
  }

  function markSelected() {
    for (const li of $("children").querySelectorAll("li.leaf")) {
      li.classList.toggle("selected", li.dataset.key === keysState.selected);
    }
  }

  async function showKey(key) {
    keysState.selected = key;
    keysState.editing = false;
    markSelected();
    const detail = $("detail");
    let k;
    try {
      k = (await api("/api/keys/get?key=" + encodeURIComponent(key))).data;
    } catch (e) {
      clear(detail).append(el("p", { class: "error" }, e.message));
      return;
    }
    if (keysState.selected !== key) return;
    keysState.shown = k;
    clear(detail);
    detail.append(el("h2", { class: "keyname", id: "key-name" }, k.key));
    if (!k.exists) {
      detail.append(el("p", { class: "note", id: "key-missing" }, "This key does not exist (revision " + k.revision + ")."),
        el("button", { type: "button", onclick: () => keyHistory(k) }, "History"));
      return;
    }
    detail.append(
      el(
        "dl",
        { class: "meta" },
        el("dt", {}, "revisions"),
        el("dd", {}, "created " + k.create_revision + ", modified " + k.mod_revision + ", version " + k.version),
        el("dt", {}, "lease"),
        el("dd", { id: "key-lease" }, k.lease ? [el("code", {}, k.lease), " TTL left ", el("span", { class: "ttl", dataset: { lease: k.lease } }, "")] : "none"),
        el("dt", {}, "size"),
        el("dd", {}, humanBytes(k.value.size) + (k.value.utf8 ? "" : " (not UTF-8: shown with \\xNN escapes)")),
      ),
    );
    if (k.lease) setTtls({ [k.lease]: k.ttl === undefined ? null : k.ttl });
    const raw = el("pre", { class: "value", id: "value-raw" }, k.value.text);
    const views = el("div", { class: "views" });
    views.append(raw);
    const tabs = el("div", { class: "tabs" });
    if (k.pretty) {
      const pretty = el("pre", { class: "value", id: "value-pretty", hidden: true }, k.pretty.text);
      views.append(pretty);
      const tRaw = el("button", { type: "button", class: "tab current" }, "Raw");
      const tPretty = el("button", { type: "button", class: "tab", id: "tab-pretty" }, "Pretty " + k.pretty.format.toUpperCase());
      tRaw.addEventListener("click", () => { raw.hidden = false; pretty.hidden = true; tRaw.classList.add("current"); tPretty.classList.remove("current"); });
      tPretty.addEventListener("click", () => { raw.hidden = true; pretty.hidden = false; tPretty.classList.add("current"); tRaw.classList.remove("current"); });
      tabs.append(tRaw, tPretty);
    }
    if (k.value.cut) detail.append(el("p", { class: "note" }, "Showing the first bytes of " + humanBytes(k.value.size) + "."));
    const panel = el("div", { class: "panel", id: "key-panel" });
    const actions = el(
      "div",
      { class: "actions" },
      el("button", { type: "button", id: "edit", onclick: () => editForm(k, panel), disabled: k.value.cut }, "Edit…"),
      el("button", { type: "button", id: "delete", class: "danger", onclick: () => deleteBox(k, panel) }, "Delete…"),
      el("button", { type: "button", id: "history", onclick: () => keyHistory(k, panel) }, "History"),
    );
    detail.append(tabs, views, actions, panel);
    tick();
  }

  function editForm(k, panel) {
    keysState.editing = true;
    clear(panel);
    const asB64 = !k.value.utf8;
    const area = el("textarea", { id: "edit-value", rows: 12, cols: 80, spellcheck: "false" });
    area.value = asB64 ? k.value.b64 : k.value.text;
    const mode = el("input", { type: "checkbox", id: "edit-b64", checked: asB64 });
    mode.addEventListener("change", () => {
      try {
        area.value = mode.checked ? textToB64(area.value) : new TextDecoder("utf-8", { fatal: true }).decode(bytesFromB64(area.value));
      } catch (e) {
        mode.checked = !mode.checked;
        notice(panel, "That value is not UTF-8 text: edit it as base64.", "warn");
      }
    });
    const save = el("button", { type: "button", id: "save" }, "Save…");
    const cancel = el("button", { type: "button", onclick: () => { keysState.editing = false; showKey(k.key_b64); } }, "Cancel");
    save.addEventListener("click", () => {
      const body = { key: k.key_b64, expect_mod_revision: k.mod_revision, lease: k.lease };
      let size;
      if (mode.checked) {
        body.value_b64 = area.value.trim();
        size = bytesFromB64(body.value_b64).length;
      } else {
        body.value = area.value;
        size = new TextEncoder().encode(area.value).length;
      }
      confirmBox(panel, "Put " + size + " bytes to “" + k.key + "” (only if it is still at revision " + k.mod_revision + ")" +
        (k.lease ? ", keeping lease " + k.lease : "") + "?", "Confirm put", () => doPut(body, panel));
    });
    panel.append(el("label", {}, "Value"), area, el("label", { class: "inline" }, mode, " edit as base64"), el("div", { class: "actions" }, save, " ", cancel));
    area.focus();
  }

  async function doPut(body, panel) {
    try {
      const r = await api("/api/keys/put", body);
      if (r.status === 409) {
        const cur = r.data.current;
        notice(panel, cur ? "Refused: the key changed meanwhile (now at revision " + cur.mod_revision + "). Cancel to see it." :
          (body.expect_mod_revision ? "Refused: the key was deleted meanwhile." : "Refused: that key exists already."), "error");
        return;
      }
      keysState.editing = false;
      banner("Saved at revision " + r.data.revision + ".", "ok");
      if (keysState.selected === body.key) showKey(body.key);
      else selectKey(body.key);
    } catch (e) {
      notice(panel, e.message, "error");
    }
  }

  function newKeyForm() {
    keysState.selected = null;
    keysState.editing = true;
    markSelected();
    const detail = clear($("detail"));
    const panel = el("div", { class: "panel" });
    const keyIn = el("input", { id: "new-key-name", size: 60, value: lossyText(bytesFromB64(keysState.prefix)) });
    const area = el("textarea", { id: "new-key-value", rows: 8, cols: 80, spellcheck: "false" });
    const leaseIn = el("input", { id: "new-key-lease", size: 20, placeholder: "none" });
    const save = el("button", { type: "button", id: "new-key-save" }, "Create…");
    save.addEventListener("click", () => {
      if (!keyIn.value) {
        notice(panel, "Give the key a name.", "error");
        return;
      }
      const body = { key: textToB64(keyIn.value), value: area.value, expect_mod_revision: 0, lease: leaseIn.value.trim() };
      confirmBox(panel, "Create “" + keyIn.value + "” with " + new TextEncoder().encode(area.value).length + " bytes" +
        (body.lease ? " on lease " + body.lease : "") + " (only if it does not exist)?", "Confirm put", () => doPut(body, panel));
    });
    panel.append(
      el("h2", {}, "New key"),
      el("label", {}, "Key ", keyIn),
      el("label", {}, "Value"), area,
      el("label", {}, "Lease (hex, optional) ", leaseIn),
      el("div", { class: "actions" }, save, " ", el("button", { type: "button", onclick: showNothing }, "Cancel")),
    );
    detail.append(panel);
    keyIn.focus();
  }

  function deleteBox(k, panel) {
    confirmBox(panel, "Delete “" + k.key + "” (only if it is still at revision " + k.mod_revision + ")?", "Confirm delete", async () => {
      try {
        const r = await api("/api/keys/delete", { key: k.key_b64, expect_mod_revision: k.mod_revision });
        if (r.status === 409) {
          notice(panel, "Refused: the key changed meanwhile.", "error");
          return;
        }
        banner("Deleted at revision " + r.data.revision + ".", "ok");
        showKey(k.key_b64);
      } catch (e) {
        notice(panel, e.message, "error");
      }
    });
  }

  async function keyHistory(k, panel) {
    const target = panel || $("detail");
    for (const old of target.querySelectorAll(".history")) old.remove();
    const box = el("div", { class: "history" }, el("p", { class: "note" }, "Reading the history…"));
    target.append(box);
    let h;
    try {
      h = (await api("/api/keys/history?key=" + encodeURIComponent(k.key_b64))).data;
    } catch (e) {
      clear(box).append(el("p", { class: "error" }, e.message));
      return;
    }
    const rows = h.entries.map((e) =>
      el(
        "tr",
        { class: e.type === "DELETE" ? "deleted" : "" },
        el("td", {}, e.revision),
        el("td", {}, e.type),
        el("td", {}, e.version === undefined ? "" : e.version),
        el("td", {}, e.lease || ""),
        el("td", {}, e.value ? el("pre", { class: "value small" }, e.value.text) : "(deleted)"),
      ),
    );
    clear(box).append(
      el("h3", {}, "History"),
      el("p", { class: "note" },
        h.total + " change" + (h.total === 1 ? "" : "s") + (h.shown < h.total ? ", newest " + h.shown + " shown" : "") +
        (h.compacted_at ? "; older history was compacted at revision " + h.compacted_at : "") +
        (h.complete ? "" : "; the replay was cut short")),
      el("table", { class: "grid", id: "history-table" },
        el("thead", {}, el("tr", {}, ["Revision", "Event", "Version", "Lease", "Value"].map((t) => el("th", {}, t)))),
        el("tbody", {}, rows)),
    );
  }

  // ======================================================================================
  // Services
  // ======================================================================================

  function servicesPage() {
    const rows = new Map(); // key text -> row
    let fresh = new Set();
    const render = () => {
      const root = clear($("services"));
      const bySvc = new Map();
      for (const r of [...rows.values()].sort((a, b) => (a.key < b.key ? -1 : 1))) {
        if (!bySvc.has(r.service)) bySvc.set(r.service, []);
        bySvc.get(r.service).push(r);
      }
      if (!bySvc.size) root.append(el("p", { class: "note", id: "no-services" }, "No service instance is registered."));
      for (const [svc, list] of bySvc) {
        root.append(
          el("section", { class: "service", dataset: { service: svc } },
            el("h2", {}, svc, el("span", { class: "small" }, " " + list.length + " instance" + (list.length === 1 ? "" : "s"))),
            el("table", { class: "grid" },
              el("thead", {}, el("tr", {}, ["Instance", "Address", "Health", "Weight", "Zone", "Version", "Metadata", "Lease", "TTL left"].map((t) => el("th", {}, t)))),
              el("tbody", {}, list.map((r) =>
                el("tr", { class: (fresh.has(r.key) ? "fresh " : "") + (r.health === "passing" ? "" : "bad"), dataset: { key: r.key } },
                  el("td", {}, r.id),
                  el("td", {}, r.addr),
                  el("td", { class: r.health === "passing" ? "ok" : "bad", title: r.error || "" }, r.health),
                  el("td", {}, r.weight === null ? "" : r.weight),
                  el("td", {}, r.zone),
                  el("td", {}, r.version),
                  el("td", { class: "small" }, Object.entries(r.metadata || {}).map(([k, v]) => k + "=" + v).join(", ")),
                  el("td", {}, r.lease ? el("code", {}, r.lease) : "none"),
                  ttlCell("td", r.lease)))))));
      }
    };
    stream("/events/services", {
      snapshot: (s) => {
        rows.clear();
        fresh = new Set();
        for (const r of s.rows) rows.set(r.key, r);
        setTtls(s.ttls);
        render();
        setLive(true, "live since revision " + s.revision);
      },
      change: (c) => {
        fresh = new Set();
        for (const k of c.removed) rows.delete(k);
        for (const r of c.upserts) {
          rows.set(r.key, r);
          fresh.add(r.key);
        }
        setTtls(c.ttls);
        render();
        setLive(true, "updated at revision " + c.revision);
      },
      ttls: (t) => setTtls(t.ttls),
    });
  }

  // ======================================================================================
  // Locks and elections
  // ======================================================================================

  function locksPage() {
    const groups = new Map();
    const entry = (e) => el("div", { class: "entry" }, el("code", {}, e.lease), " ", el("span", { class: "small" }, "rev " + e.create_revision + ", TTL "), ttlCell("span", e.lease));
    const render = () => {
      const body = clear($("locks"));
      const list = [...groups.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
      if (!list.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "note" }, "No lock or election is held.")));
      for (const g of list) {
        body.append(
          el("tr", { dataset: { group: g.id } },
            el("td", {}, el("span", { class: "badge " + g.kind }, g.kind)),
            el("td", {}, el("code", { class: "keyname" }, g.name)),
            el("td", {}, entry(g.holder)),
            el("td", {}, g.kind === "election" ? el("pre", { class: "value small" }, g.holder.value.text) : ""),
            el("td", {}, g.waiters.length ? g.waiters.map(entry) : el("span", { class: "note" }, "none"))));
      }
    };
    stream("/events/locks", {
      snapshot: (s) => {
        groups.clear();
        for (const g of s.groups) groups.set(g.id, g);
        setTtls(s.ttls);
        render();
        setLive(true, "live");
      },
      change: (c) => {
        for (const id of c.removed) groups.delete(id);
        for (const g of c.upserts) groups.set(g.id, g);
        setTtls(c.ttls);
        render();
        setLive(true, "updated at revision " + c.revision);
      },
      ttls: (t) => setTtls(t.ttls),
    });
  }

  // ======================================================================================
  // Config center
  // ======================================================================================

  const cfgState = { configs: new Map(), selected: null, history: null };

  function configPage() {
    const params = new URLSearchParams(location.search);
    if (params.get("name")) cfgState.selected = params.get("name");
    stream("/events/config", {
      snapshot: (s) => {
        cfgState.configs.clear();
        for (const c of s.configs) cfgState.configs.set(c.name, c);
        renderConfigList();
        setLive(true, "live since revision " + s.revision);
        if (cfgState.selected) loadConfig(cfgState.selected);
      },
      change: (c) => {
        for (const n of c.removed) cfgState.configs.delete(n);
        for (const s of c.upserts) cfgState.configs.set(s.name, s);
        renderConfigList();
        setLive(true, "updated at revision " + c.revision);
        const names = [...c.removed, ...c.upserts.map((s) => s.name)];
        if (cfgState.selected && names.includes(cfgState.selected)) loadConfig(cfgState.selected);
      },
    });
  }

  function renderConfigList() {
    const ul = clear($("configs"));
    const byNs = new Map();
    for (const c of [...cfgState.configs.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (!byNs.has(c.namespace)) byNs.set(c.namespace, []);
      byNs.get(c.namespace).push(c);
    }
    if (!byNs.size) ul.append(el("li", { class: "note" }, "No config is published."));
    for (const [ns, list] of byNs) {
      ul.append(el("li", { class: "ns" }, ns + "/"));
      for (const c of list) {
        ul.append(
          el("li", { class: "leaf" + (c.name === cfgState.selected ? " selected" : ""), dataset: { name: c.name } },
            el("a", { href: "/config?name=" + encodeURIComponent(c.name), class: "child", onclick: (ev) => { ev.preventDefault(); selectConfig(c.name); } }, c.app),
            el("span", { class: "small" }, c.error ? " (broken record)" : " v" + c.version + " @" + c.revision)));
      }
    }
  }

  function selectConfig(name) {
    cfgState.selected = name;
    history.pushState(null, "", "/config?name=" + encodeURIComponent(name));
    renderConfigList();
    loadConfig(name);
  }

  async function loadConfig(name) {
    const detail = $("config-detail");
    let h;
    try {
      h = (await api("/api/config/history?name=" + encodeURIComponent(name))).data;
    } catch (e) {
      clear(detail).append(el("p", { class: "error" }, e.message));
      return;
    }
    if (cfgState.selected !== name) return;
    cfgState.history = h;
    const cur = h.versions.find((v) => v.revision === h.current_revision);
    const panel = el("div", { class: "panel", id: "config-panel" });
    const fromSel = el("select", { id: "diff-from" }, h.versions.map((v) => el("option", { value: v.revision }, "v" + v.version + " @" + v.revision)));
    const toSel = el("select", { id: "diff-to" }, h.versions.map((v) => el("option", { value: v.revision }, "v" + v.version + " @" + v.revision)));
    if (h.versions.length > 1) fromSel.value = String(h.versions[1].revision);
    const rows = h.versions.map((v) =>
      el("tr", { class: v.revision === h.current_revision ? "current" : "", dataset: { revision: v.revision } },
        el("td", {}, "v" + v.version),
        el("td", {}, v.revision),
        el("td", { class: "small" }, v.time),
        el("td", {}, v.author),
        el("td", {}, v.message, v.rollback_of ? el("span", { class: "small" }, " (rollback of " + v.rollback_of + ")") : null),
        el("td", { class: "actions" },
          el("button", { type: "button", class: "view", onclick: () => viewVersion(name, v.revision, panel) }, "View"),
          v.revision === h.current_revision ? el("span", { class: "badge leader" }, "current") :
            el("button", { type: "button", class: "rollback danger", onclick: () => rollbackBox(name, v, h.current_revision, panel) }, "Roll back…"))));
    clear(detail).append(
      el("h2", { id: "config-name" }, name),
      cur ? el("p", { id: "config-current" }, "Published: version " + cur.version + " at revision " + cur.revision + " by " + cur.author + (cur.message ? " — " + cur.message : "")) :
        el("p", { class: "note" }, "Nothing is published now."),
      el("table", { class: "grid", id: "versions" },
        el("thead", {}, el("tr", {}, ["Version", "Revision", "Time", "Author", "Message", ""].map((t) => el("th", {}, t)))),
        el("tbody", {}, rows)),
      h.versions.length > 1 ? el("div", { class: "bar" }, "Diff ", fromSel, " → ", toSel, " ",
        el("button", { type: "button", id: "diff", onclick: () => showDiff(name, fromSel.value, toSel.value, panel) }, "Show diff")) : null,
      panel,
    );
  }

  async function viewVersion(name, revision, panel) {
    try {
      const v = (await api("/api/config/version?name=" + encodeURIComponent(name) + "&revision=" + revision)).data;
      clear(panel).append(el("h3", {}, "Version " + v.version + " (" + v.format + ", revision " + v.revision + ")"),
        el("pre", { class: "value", id: "version-text" }, v.text));
    } catch (e) {
      clear(panel).append(el("p", { class: "error" }, e.message));
    }
  }

  async function showDiff(name, from, to, panel) {
    try {
      const d = (await api("/api/config/diff?name=" + encodeURIComponent(name) + "&from=" + from + "&to=" + to)).data;
      const pre = el("pre", { class: "diff", id: "diff-text" });
      if (!d.diff) pre.append(el("span", { class: "note" }, "(no difference)"));
      for (const line of d.diff.split("\n")) {
        const cls = line.startsWith("+++") || line.startsWith("---") ? "file" : line.startsWith("@@") ? "hunk" :
          line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "";
        pre.append(el("span", { class: cls }, line), "\n");
      }
      clear(panel).append(el("h3", {}, "Diff " + from + " → " + to), pre);
    } catch (e) {
      clear(panel).append(el("p", { class: "error" }, e.message));
    }
  }

  function rollbackBox(name, v, base, panel) {
    confirmBox(panel, "Publish version " + v.version + " (revision " + v.revision + ") of " + name +
      " again as a new version (only if revision " + base + " is still the published one)?", "Confirm rollback", async () => {
      try {
        const r = await api("/api/config/rollback", { name, revision: v.revision, base_revision: base });
        if (r.status === 409) {
          notice(panel, "Refused: " + r.data.error, "error");
          return;
        }
        banner("Rolled back: version " + r.data.version.version + " at revision " + r.data.version.revision + ".", "ok");
      } catch (e) {
        notice(panel, e.message, "error");
      }
    });
  }

  // ---- start ---------------------------------------------------------------------------

  const pages = { members: membersPage, keys: keysPage, services: servicesPage, locks: locksPage, config: configPage };
  if (pages[page]) pages[page]();
})();
