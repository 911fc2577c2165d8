// orderbot's chat on a business's own site:
//   <script src="https://ORDERBOT/chat/widget.js" data-tenant="SLUG" defer></script>
// A button in the corner opens the chat page in a frame; everything is served by orderbot.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) { return; }
  var origin = new URL(script.src).origin;
  var tenant = script.getAttribute("data-tenant");
  var url = origin + "/chat" + (tenant ? "/" + encodeURIComponent(tenant) : "") + "?embed=1";
  var label = script.getAttribute("data-label") || "Chat";

  var button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.setAttribute("data-testid", "chat-widget-open");
  button.style.cssText = "position:fixed;right:1rem;bottom:1rem;z-index:2147483646;" +
    "padding:.75rem 1.25rem;border:0;border-radius:2rem;background:#2563eb;color:#fff;" +
    "font:16px system-ui,sans-serif;box-shadow:0 2px 8px rgba(0,0,0,.25);cursor:pointer";

  var frame = null;
  button.addEventListener("click", function () {
    if (!frame) {
      frame = document.createElement("iframe");
      frame.src = url;
      frame.title = label;
      frame.setAttribute("data-testid", "chat-widget-frame");
      frame.style.cssText = "position:fixed;right:1rem;bottom:4.5rem;z-index:2147483647;" +
        "width:min(24rem,calc(100vw - 2rem));height:min(36rem,calc(100vh - 6rem));" +
        "border:0;border-radius:.75rem;box-shadow:0 4px 24px rgba(0,0,0,.3);background:#fff";
      document.body.appendChild(frame);
      return;
    }
    frame.hidden = !frame.hidden;
  });
  document.body.appendChild(button);
})();
