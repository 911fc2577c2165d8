// The web chat page: post the customer's messages, show the conversation live (SSE).
// Each message gets its id here, before the first try, and keeps it through retries:
// the server takes a repeated post as the same message.
(function () {
  "use strict";
  var root = document.getElementById("chat");
  var log = document.getElementById("chat-log");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var send = document.getElementById("chat-send");
  var state = document.getElementById("chat-state");
  var error = document.getElementById("chat-error");
  var postUrl = root.dataset.postUrl;
  var eventsUrl = root.dataset.eventsUrl;
  var shown = {}; // the customer's message ids already on the page
  var entries = {}; // stream entry ids already on the page

  function newId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  function render(direction, text, messageId) {
    var item = document.createElement("li");
    item.className = "chat-message";
    item.setAttribute("data-testid", "chat-message");
    item.setAttribute("data-direction", direction);
    if (messageId) { item.setAttribute("data-message-id", messageId); }
    item.textContent = text;
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
    return item;
  }

  function showError(text) {
    error.textContent = text;
    error.hidden = !text;
  }

  function post(id, text, item, attempt) {
    fetch(postUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: id, text: text })
    }).then(function (response) {
      if (response.ok) {
        item.removeAttribute("data-pending");
        showError("");
        return;
      }
      if (response.status >= 500 || response.status === 429) { throw new Error("retry"); }
      return response.json().then(function (body) {
        item.setAttribute("data-failed", "1");
        showError(body.error + (typeof body.detail === "string" ? ": " + body.detail : ""));
      });
    }).catch(function () {
      // The network or the server failed: the same id again, a little later.
      var delay = Math.min(1000 * Math.pow(2, attempt), 15000);
      showError("not sent yet, retrying…");
      window.setTimeout(function () { post(id, text, item, attempt + 1); }, delay);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) { return; }
    var id = newId();
    shown[id] = true;
    var item = render("in", text, id);
    item.setAttribute("data-pending", "1");
    input.value = "";
    input.focus();
    post(id, text, item, 0);
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit ? form.requestSubmit() : send.click();
    }
  });

  function listen() {
    var source = new EventSource(eventsUrl);
    source.addEventListener("open", function () { state.textContent = "online"; });
    source.addEventListener("error", function () {
      // EventSource reconnects by itself, with Last-Event-ID.
      state.textContent = "reconnecting…";
    });
    source.addEventListener("message", function (event) {
      var message = JSON.parse(event.data);
      if (entries[message.id]) { return; }
      entries[message.id] = true;
      if (message.direction === "in" && message.message_id && shown[message.message_id]) {
        return; // this page showed it when it was sent
      }
      if (message.message_id) { shown[message.message_id] = true; }
      render(message.direction, message.text, message.message_id);
    });
  }

  listen();
  input.focus();
})();
