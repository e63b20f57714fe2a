// The cashier screen: send an e-mail claim, and keep the list of outcomes at this till fresh.
// Only textContent is ever set from server data, never HTML.
"use strict";

(function () {
  const body = document.body;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const pollMs = Number(body.dataset.pollMs) || 500;
  const form = document.getElementById("claim");
  const input = document.getElementById("address");
  const button = form.querySelector("button");
  const result = document.getElementById("result");
  const list = document.getElementById("feed");
  const offline = document.getElementById("offline");
  let etag = null;
  let busy = false;

  function icon(outcome) {
    const img = document.createElement("img");
    img.className = "icon";
    img.alt = "";
    img.src = "/static/" + outcome + ".svg";
    return img;
  }

  function show(target, data) {
    target.className = target.className.replace(/\boutcome-\S+/g, "").trim() +
      " outcome-" + data.outcome;
    target.dataset.outcome = data.outcome;
    target.querySelector(".icon").src = "/static/" + iconName(data.outcome) + ".svg";
    target.querySelector(".title").textContent = data.title;
    target.querySelector(".detail").textContent = data.detail;
    target.hidden = false;
  }

  function iconName(outcome) {
    return outcome === "duplicate" || outcome === "accepted" ? "pending" : outcome;
  }

  function entry(data) {
    const li = document.createElement("li");
    li.className = "entry outcome-" + data.outcome;
    li.dataset.outcome = data.outcome;
    li.dataset.key = data.key;
    li.appendChild(icon(iconName(data.outcome)));
    const words = document.createElement("div");
    words.className = "words";
    const top = document.createElement("p");
    top.className = "top";
    const title = document.createElement("strong");
    title.className = "title";
    title.textContent = data.title;
    const customer = document.createElement("span");
    customer.className = "customer";
    customer.textContent = data.customer;
    const time = document.createElement("time");
    time.textContent = data.time + " · " + data.source;
    top.append(title, customer, time);
    const detail = document.createElement("p");
    detail.className = "detail";
    detail.textContent = data.detail;
    words.append(top, detail);
    li.appendChild(words);
    return li;
  }

  function render(entries) {
    list.replaceChildren(...entries.map(entry));
    if (entries.length === 0) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = body.dataset.empty;
      list.appendChild(li);
    }
  }

  async function poll() {
    try {
      const headers = etag ? { "If-None-Match": etag } : {};
      const response = await fetch("/api/outcomes", { headers, cache: "no-store" });
      if (response.status === 401) {
        window.location.reload(); // the session ended: show the PIN form
        return;
      }
      if (response.status === 200) {
        etag = response.headers.get("ETag");
        render((await response.json()).entries);
      } else if (response.status !== 304) {
        throw new Error("status " + response.status);
      }
      offline.hidden = true;
    } catch (error) {
      offline.textContent = body.dataset.offline;
      offline.hidden = false;
    } finally {
      window.setTimeout(poll, pollMs);
    }
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (busy) return;
    busy = true;
    button.disabled = true;
    button.dataset.label = button.dataset.label || button.textContent;
    button.textContent = body.dataset.sending;
    try {
      const response = await fetch("/api/claim", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ address: input.value }),
      });
      if (response.status === 401) {
        window.location.reload();
        return;
      }
      if (!response.ok) throw new Error("status " + response.status);
      const data = await response.json();
      show(result, data);
      if (data.outcome === "rejected") {
        input.select();
      } else {
        input.value = "";
      }
      etag = null; // show the new line at once
    } catch (error) {
      offline.textContent = body.dataset.offline;
      offline.hidden = false;
    } finally {
      busy = false;
      button.disabled = false;
      button.textContent = button.dataset.label;
      input.focus();
    }
  });

  poll();
})();
