// The board's live updates: a new or moved order is put in its column as it happens.
// Cards are rendered by the server (/console/orders/{id}/card); this only places them.
"use strict";
(function () {
  const page = document.body.dataset.page;
  if (page !== "board" && page !== "order") return;
  const live = document.getElementById("live");
  // From the last event before the page was rendered: nothing between the two is missed.
  const since = document.body.dataset.lastEventId;
  const source = new EventSource(
    "/console/events" + (since ? "?last_event_id=" + encodeURIComponent(since) : "")
  );
  source.addEventListener("open", function () { if (live) live.hidden = false; });
  source.addEventListener("error", function () { if (live) live.hidden = true; });
  source.addEventListener("order", function (event) {
    const data = payload(event);
    const id = String(data.order_id || "");
    if (!/^\d+$/.test(id)) return;
    if (page === "board") placeCard(id);
    else if (orderShown() === id) refreshOrder();
  });
  // The order page's conversation grows as the customer and the bot write.
  ["message", "status"].forEach(function (kind) {
    source.addEventListener(kind, function (event) {
      if (page !== "order") return;
      const data = payload(event);
      const chat = document.querySelector("[data-testid=conversation]");
      if (chat && String(data.conversation_id) === chat.dataset.conversationId) refreshOrder();
    });
  });

  // Each message is a whole live event ({tenant, kind, at, data, id}); its data is what changed.
  function payload(event) {
    try { return JSON.parse(event.data).data || {}; } catch (e) { return {}; }
  }

  function orderShown() {
    const shown = document.getElementById("order");
    return shown ? shown.dataset.orderId : null;
  }

  function recount() {
    document.querySelectorAll(".column").forEach(function (column) {
      const count = column.querySelector(".count");
      if (count) count.textContent = column.querySelectorAll("[data-testid=order-card]").length;
    });
  }

  function placeCard(id) {
    fetch("/console/orders/" + id + "/card", { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        const template = document.createElement("template");
        template.innerHTML = html.trim();
        const card = template.content.firstElementChild;
        if (!card) return;
        const column = document.querySelector('[data-column="' + card.dataset.status + '"] .cards');
        const old = document.querySelector('[data-testid=order-card][data-order-id="' + id + '"]');
        if (old) old.remove();
        if (!column) return;
        card.classList.add("fresh");
        // Newest first, as the server renders them.
        const later = Array.from(column.children).find(function (c) {
          return Number(c.dataset.orderId) < Number(id);
        });
        column.insertBefore(card, later || null);
        recount();
      })
      .catch(function () {});
  }

  function refreshOrder() {
    const shown = document.getElementById("order");
    if (!shown) return;
    fetch(window.location.pathname, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("order");
        if (fresh) shown.replaceWith(fresh);
      })
      .catch(function () {});
  }
})();
